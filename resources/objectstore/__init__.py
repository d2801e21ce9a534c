"""Object storage: where the Lance tables and the packs live when ``SESSIONLAKE_STORAGE_URI`` names a bucket.

`location` turns the one setting into Lance's URI and storage options and an object-store client;
`blobs` is the small client the packs, the push and the team manifests use (obstore).
"""
