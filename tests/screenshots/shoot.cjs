// Takes the README's screenshots of a running Dagster UI with headless Chromium (playwright-core).
// Called by take.py with one JSON argument: {url, out, chromium, profile, partition, runId}.
// Each shot waits for the content it is meant to show, so a spinner or an error page fails the run.
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const spec = JSON.parse(process.argv[2]);
const TIMEOUT_MS = 120000;

async function settle(page) {
  await page.waitForLoadState('networkidle', { timeout: TIMEOUT_MS });
  await page.waitForTimeout(1500);
}

const shots = [
  {
    name: 'sensor-ticks',
    path: '/locations/sessionlake/sensors/session_files_sensor',
    ready: async (page) => {
      // The table lists the tick that asked for the last run; the timeline above it shows it in green.
      await page.getByText('1 run requested').first().waitFor({ timeout: TIMEOUT_MS });
    },
  },
  {
    name: 'asset-graph',
    path: '/locations/sessionlake/asset-groups/sessions',
    ready: async (page) => {
      for (const asset of ['session_files', 'usage_messages', 'memory_records', 'session_archive']) {
        await page.getByText(asset, { exact: true }).first().waitFor({ timeout: TIMEOUT_MS });
      }
      await page.getByText('100% filled').first().waitFor({ timeout: TIMEOUT_MS });
    },
  },
  {
    name: 'metadata-plots',
    path: '/assets/usage_messages',
    ready: async (page) => {
      await page.getByText('Plots', { exact: true }).click({ timeout: TIMEOUT_MS });
      await page.locator('canvas').first().waitFor({ timeout: TIMEOUT_MS });
      await page.getByText('Metadata', { exact: true }).first().evaluate((e) => e.scrollIntoView({ block: 'start' }));
    },
  },
  {
    name: 'run',
    path: `/runs/${spec.runId}`,
    ready: async (page) => {
      await page.getByText('RUN_SUCCESS').first().waitFor({ timeout: TIMEOUT_MS });
    },
  },
];

(async () => {
  fs.mkdirSync(spec.profile, { recursive: true });
  const context = await chromium.launchPersistentContext(spec.profile, {
    executablePath: spec.chromium,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1400, height: 900 },
  });
  try {
    const page = context.pages()[0] || await context.newPage();
    for (const shot of shots) {
      await page.goto(spec.url + shot.path, { timeout: TIMEOUT_MS });
      await shot.ready(page);
      await settle(page);
      const file = path.join(spec.out, `${shot.name}.png`);
      await page.screenshot({ path: file });
      console.error(`wrote ${file}`);
    }
  } finally {
    await context.close();
  }
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
