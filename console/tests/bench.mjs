// `make bench-console` (not a test): what the console ships and how fast it reaches an
// interactive inbox on the local stack. Seeds 60 conversations, then loads the console in
// fresh browser contexts (nothing cached) signed in with a key already in the tab, and
// reports the bytes transferred and the time from navigation to the first inbox rows in the
// document (observed in the page), as medians over the runs.

import { startStack } from './stack.mjs';
import { launch, newPage } from './browser.mjs';

const RUNS = Number(process.env.RUNS || 15);
const stack = await startStack();
const browser = await launch();
try {
  const agent = await stack.user('Bench Agent', 'agent');
  for (let i = 0; i < 60; i += 1) {
    await stack.customerWrites(`+4479111${String(30000 + i).padStart(5, '0')}`, `Message ${i}`, `Customer ${i}`);
  }
  const loads = [];
  for (let run = 0; run < RUNS; run += 1) {
    const { page, context } = await newPage(browser, stack);
    await context.addInitScript((key) => sessionStorage.setItem('wcrm.api_key', key), agent.key);
    // The moment the first row is in the document, seen from inside the page: a wait from
    // outside polls, and its interval would be measured with it.
    await context.addInitScript(() => {
      new MutationObserver((_, observer) => {
        if (!document.querySelector('[data-testid="conversation-row"]')) return;
        window.inboxShownAt = performance.now();
        observer.disconnect();
      }).observe(document, { childList: true, subtree: true });
    });
    const bytes = { console: 0, api: 0 };
    page.on('response', async (response) => {
      const size = Number((await response.headerValue('content-length')) || (await response.body().catch(() => Buffer.alloc(0))).length);
      if (new URL(response.url()).pathname.startsWith('/v1/')) bytes.api += size;
      else bytes.console += size;
    });
    await page.goto(`${stack.base}/`);
    await page.getByTestId('conversation-row').first().waitFor();
    const interactiveMs = await page.evaluate(() => window.inboxShownAt);
    loads.push({ interactiveMs, ...bytes });
    await context.close();
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const result = {
    runs: RUNS,
    conversations: 60,
    interactive_ms_median: Math.round(median(loads.map((l) => l.interactiveMs))),
    interactive_ms_max: Math.round(Math.max(...loads.map((l) => l.interactiveMs))),
    console_bytes: median(loads.map((l) => l.console)),
    api_bytes_first_load: median(loads.map((l) => l.api)),
  };
  console.log(JSON.stringify(result, null, 2));
} finally {
  await browser.close();
  await stack.stop();
}
