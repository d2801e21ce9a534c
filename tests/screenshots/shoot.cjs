// Takes the docs' screenshots of a running Dagster UI with headless Chromium (playwright-core).
// Called by take.py with one JSON argument: {url, out, chromium, profile, runId}; an optional second
// argument names the only shot to take (for trying one out).
// Each shot waits for the content it is meant to show, so a spinner or an error page fails the run.
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const spec = JSON.parse(process.argv[2]);
const only = process.argv[3];
const TIMEOUT_MS = 120000;

async function settle(page) {
  await page.waitForLoadState('networkidle', { timeout: TIMEOUT_MS });
  await page.waitForTimeout(1500);
}

async function scrollTo(page, text) {
  await page.getByText(text, { exact: true }).first().evaluate((e) => e.scrollIntoView({ block: 'start' }));
}

// usage_messages' metadata plots: waits for the plot of `shown`, then scrolls so `top` heads the picture.
function usagePlots(name, shown, top) {
  return {
    name,
    path: '/assets/usage_messages',
    ready: async (page) => {
      await page.getByText('Plots', { exact: true }).click({ timeout: TIMEOUT_MS });
      await page.getByText(shown, { exact: true }).first().waitFor({ timeout: TIMEOUT_MS });
      await page.locator('canvas').first().waitFor({ timeout: TIMEOUT_MS });
      await settle(page);
      await scrollTo(page, top);
    },
  };
}

const shots = [
  usagePlots('usage-plots', 'cost_usd', 'cost_usd'),
  usagePlots('usage-plots-tokens', 'total_tokens', 'responses'),
  {
    name: 'usage-totals',
    path: '/assets/usage_totals',
    ready: async (page) => {
      await page.getByText('week_by_project', { exact: true }).first().waitFor({ timeout: TIMEOUT_MS });
      await settle(page);
      await scrollTo(page, 'week_by_project');
    },
  },
  {
    name: 'checks',
    path: '/assets/usage_messages?view=checks',
    ready: async (page) => {
      for (const check of ['files_fresh', 'files_ingested']) {
        await page.getByText(check, { exact: true }).first().waitFor({ timeout: TIMEOUT_MS });
      }
      // files_fresh's latest evaluation, by session_freshness_sensor (no run).
      await page.getByText(/caught up with \d+ file/).first().waitFor({ timeout: TIMEOUT_MS });
    },
  },
  {
    name: 'lineage',
    path: '/asset-groups',
    ready: async (page) => {
      // The global graph opens with each group collapsed; Alt+E expands them all.
      await page.getByText('sessions', { exact: true }).first().waitFor({ timeout: TIMEOUT_MS });
      await settle(page);
      await page.keyboard.press('Alt+e');
      await page.getByText('usage_totals', { exact: true }).first().waitFor({ timeout: TIMEOUT_MS });
      for (const asset of ['usage_messages', 'usage_totals', 'recall_provenance', 'lance_events',
        'lance_storage', 'consolidated_packs']) {
        await page.getByText(asset, { exact: true }).first().waitFor({ timeout: TIMEOUT_MS });
      }
      // Zoomed out from the graph's centre (Ctrl+wheel) and moved down (wheel), so every group is in view.
      await page.mouse.move(950, 480);
      await page.keyboard.down('Control');
      await page.mouse.wheel(0, 80);
      await page.keyboard.up('Control');
      await page.mouse.wheel(0, -60);
    },
  },
  {
    name: 'sensor-ticks',
    path: '/locations/sessionlake/sensors/session_files_sensor',
    ready: async (page) => {
      // The table lists the tick that asked for the last run; the timeline above it shows it in green.
      await page.getByText('1 run requested').first().waitFor({ timeout: TIMEOUT_MS });
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
    for (const shot of shots.filter((s) => !only || s.name === only)) {
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
