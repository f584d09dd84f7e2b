// The console in real headless Chromium against a real local stack with the Meta sandbox.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack } from './stack.mjs';
import { launch, newPage, signIn, screenshot } from './browser.mjs';

let stack;
let browser;
let agent;
let second;
const opened = [];

before(async () => {
  stack = await startStack();
  browser = await launch();
  agent = await stack.user('Ana Agent', 'agent');
  second = await stack.user('Ben Agent', 'agent');
});

after(async () => {
  for (const { context, thirdParty, problems } of opened) {
    await context.close();
    assert.deepEqual(thirdParty, [], 'the console makes no third-party request');
    assert.deepEqual(problems.filter((p) => !/Failed to load resource.*(401|404|409)/.test(p)), [], 'no script error');
  }
  await browser?.close();
  await stack?.stop();
});

async function open(options) {
  const tab = await newPage(browser, stack, options);
  opened.push(tab);
  return tab;
}

test('the console is served with a strict policy and is small', async () => {
  const response = await fetch(`${stack.base}/`);
  assert.equal(response.status, 200);
  const csp = response.headers.get('content-security-policy');
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self';/);
  assert.match(csp, /frame-ancestors 'none'/);
  let total = 0;
  for (const file of ['index.html', 'app.js', 'api.js', 'dom.js', 'inbox.js', 'conversation.js', 'composer.js', 'contact.js', 'live.js', 'broadcasts.js', 'style.css']) {
    const body = await (await fetch(`${stack.base}/${file}`)).arrayBuffer();
    total += body.byteLength;
  }
  assert.ok(total < 100 * 1024, `the console ships ${total} bytes`);
  assert.equal((await fetch(`${stack.base}/tests/package.json`)).status, 404);
});

test('a customer message appears live in the inbox with an unread badge', async () => {
  const { page } = await open();
  await signIn(page, stack, agent.key);
  await screenshot(page, 'signed-in-empty');
  await stack.customerWrites('+447911123101', 'Hello, is my order on its way?', 'Chloe Customer');
  const row = page.getByTestId('conversation-row').filter({ hasText: 'Chloe Customer' });
  await row.waitFor({ timeout: 20_000 });
  await assert.doesNotReject(row.getByTestId('unread').filter({ hasText: '1' }).waitFor({ timeout: 10_000 }));
  await screenshot(page, 'inbox');
});

test('the agent replies and sees sent, delivered and read', async () => {
  const { page } = await open();
  await signIn(page, stack, agent.key);
  await page.getByTestId('conversation-row').filter({ hasText: 'Chloe Customer' }).click();
  await page.getByTestId('timeline').getByText('Hello, is my order on its way?').waitFor();
  await page.getByLabel('Reply').fill('It ships today.');
  await page.getByTestId('send').click();
  const status = page.getByTestId('message').filter({ hasText: 'It ships today.' }).getByTestId('message-status');
  for (const expected of ['sent', 'delivered', 'read']) {
    await status.filter({ hasText: new RegExp(`\\b${expected}$`) }).waitFor({ timeout: 20_000 });
  }
  // Opening the conversation moved the read mark: the badge is gone.
  await page.getByTestId('conversation-row').filter({ hasText: 'Chloe Customer' }).getByTestId('unread').waitFor({ state: 'detached', timeout: 10_000 });
  await screenshot(page, 'conversation');
});

test('outside the window only an approved template can be sent, with its fields checked', async () => {
  const template = {
    name: 'order_shipped', language: 'en_US', category: 'UTILITY',
    components: [{ type: 'BODY', text: 'Hi {{1}}, order {{2}} has shipped.', example: { body_text: [['Ana', 'A-1']] } }],
  };
  await stack.api(stack.adminKey, 'POST', '/v1/templates', template);
  // The sandbox approves a new template after its short review; wait for the registry.
  for (let i = 0; ; i += 1) {
    const got = await stack.api(stack.adminKey, 'GET', '/v1/templates/order_shipped');
    const status = got.languages.find((t) => t.language === 'en_US')?.status;
    if (status === 'APPROVED') break;
    assert.ok(i < 100, 'the template was approved');
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  const contact = await stack.api(stack.adminKey, 'POST', '/v1/contacts', { phone: '+447911123202', name: 'Dan Dormant' });
  const { page } = await open();
  await signIn(page, stack, agent.key);
  await page.getByLabel('Search by name or phone').fill('Dan');
  await page.getByTestId('contact-row').filter({ hasText: 'Dan Dormant' }).click();
  const composer = page.getByTestId('composer');
  await composer.getByText('The 24-hour window is closed').waitFor();
  assert.equal(await page.getByTestId('reply-text').count(), 0, 'no free text outside the window');
  await composer.getByTestId('template-select').selectOption({ label: 'order_shipped (en_US, utility)' });
  await composer.getByLabel('{{1}}').fill('Dan');
  await composer.getByTestId('send-template').click();
  await composer.getByText('needs a value').waitFor();
  await composer.getByLabel('{{2}}').fill('B-42');
  await composer.getByTestId('send-template').click();
  await page.getByTestId('message').filter({ hasText: 'order_shipped' }).waitFor({ timeout: 20_000 });
  const sent = await stack.api(stack.adminKey, 'GET', `/v1/contacts/${contact.id}/messages`);
  assert.equal(sent.items.length, 1);
  assert.deepEqual(sent.items[0].content.components, [{ type: 'body', parameters: [{ type: 'text', text: 'Dan' }, { type: 'text', text: 'B-42' }] }]);
});

test('two agents assign at once: one wins and the other sees it', async () => {
  await stack.customerWrites('+447911123303', 'Can someone help me?', 'Eve Racer');
  const tabs = [await open(), await open()];
  const keys = [agent.key, second.key];
  for (const [i, { page }] of tabs.entries()) {
    await signIn(page, stack, keys[i]);
    const row = page.getByTestId('conversation-row').filter({ hasText: 'Eve Racer' });
    await row.waitFor({ timeout: 20_000 });
    await row.click();
    await page.getByTestId('assign-me').waitFor();
  }
  await Promise.all(tabs.map(({ page }) => page.getByTestId('assign-me').click()));
  const labels = await Promise.all(tabs.map(async ({ page }) => {
    await page.getByTestId('assignee').filter({ hasText: /Assigned to (you|Ana Agent|Ben Agent)/ }).waitFor();
    return page.getByTestId('assignee').innerText();
  }));
  const winners = labels.filter((l) => l === 'Assigned to you');
  assert.equal(winners.length, 1, `exactly one agent holds it: ${labels}`);
  const loser = tabs[labels.indexOf(labels.find((l) => l !== 'Assigned to you'))].page;
  await loser.getByTestId('conversation-alert').filter({ hasText: 'Someone else changed the assignment first' }).waitFor();
  await screenshot(loser, 'assignment-race');
});

test('a sign-in link signs a user in once, and keeps the code out of the address bar', async () => {
  const login = await stack.crmctl('user', 'login', '--tenant', stack.tenant, '--user', second.id, '--console', `${stack.base}/`);
  assert.match(login.sign_in_url, /#signin=wcrs_/);
  const { page } = await open();
  await page.goto(login.sign_in_url);
  await page.getByTestId('who').filter({ hasText: 'Ben Agent \u00b7 agent' }).waitFor();
  assert.equal(new URL(page.url()).hash, '', 'the code left the address bar');
  const key = await page.evaluate(() => sessionStorage.getItem('wcrm.api_key'));
  assert.match(key, /^wcrm_/);
  const me = await stack.api(key, 'GET', '/v1/me');
  assert.equal(me.user.id, second.id);
  // Used once: a second browser gets nowhere with the same link.
  const other = await open();
  await other.page.goto(login.sign_in_url);
  await other.page.getByText('That sign-in link did not work').waitFor();
});

test('consent and restriction edits show in the panel with their history, and restriction stops the composer', async () => {
  const { page } = await open();
  await signIn(page, stack, agent.key);
  await page.getByTestId('conversation-row').filter({ hasText: 'Chloe Customer' }).click();
  const panel = page.getByRole('complementary', { name: 'Contact' });
  await panel.getByLabel('Set to').selectOption('opted_in');
  await panel.getByLabel('Source').fill('asked in chat');
  await panel.getByRole('button', { name: 'Record' }).click();
  await panel.getByTestId('consent').filter({ hasText: 'opted in (asked in chat)' }).waitFor();
  await panel.getByText('Consent history (1)').click();
  await panel.getByTestId('consent-history').getByText(/unknown → opted in · asked in chat/).waitFor();
  await panel.getByLabel('Reason').fill('customer objected');
  await panel.getByRole('button', { name: 'Restrict processing' }).click();
  await page.getByTestId('composer').getByText('Processing of this contact is restricted').waitFor();
  await panel.getByText('Restriction history (1)').click();
  await panel.getByTestId('restriction-history').getByText(/not restricted → restricted · customer objected/).waitFor();
  await panel.getByRole('button', { name: 'Lift restriction' }).click();
  await page.getByTestId('reply-text').waitFor();
  await panel.getByLabel('Name').fill('Chloe C.');
  await panel.getByRole('button', { name: 'Save profile' }).click();
  await page.getByTestId('conversation-row').filter({ hasText: 'Chloe C.' }).waitFor({ timeout: 20_000 });
  const contact = (await stack.api(stack.adminKey, 'GET', '/v1/contacts?q=Chloe')).items[0];
  assert.equal(contact.name, 'Chloe C.');
  assert.equal(contact.restricted, false);
  assert.equal(contact.consent.marketing, 'opted_in');
});

test('a key refused on load (its user disabled) returns to the sign-in page, with the reason, and nothing else runs', async () => {
  const leaver = await stack.user('Lee Leaver', 'agent');
  await stack.api(stack.adminKey, 'DELETE', `/v1/users/${leaver.id}`);
  // A tab that still holds the key (signed in before the user was disabled) is opened again.
  // The first screen's reads go out together; every one of them is refused.
  const { page, context } = await open();
  await context.addInitScript((key) => sessionStorage.setItem('wcrm.api_key', key), leaver.key);
  const refused = [];
  page.on('response', (r) => { if (r.status() === 401) refused.push(new URL(r.url()).pathname); });
  await page.goto(`${stack.base}/`);
  await page.getByRole('alert').filter({ hasText: 'That key was not accepted.' }).waitFor();
  await page.waitForTimeout(2500); // a live poll would have run by now
  assert.equal(await page.getByLabel('API key').count(), 1, 'the sign-in form is shown');
  assert.equal(await page.getByTestId('who').count(), 0, 'no pane was drawn');
  assert.equal(await page.getByRole('alert').textContent(), 'That key was not accepted.');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('wcrm.api_key')), null, 'the key left the tab');
  assert.ok(refused.includes('/v1/me'), `refused: ${refused}`);
  assert.ok(refused.filter((p) => p === '/v1/events').length <= 1, `no live poll after sign-out: ${refused}`);
});

test('a viewer sees the conversation but no composer and no actions', async () => {
  const viewer = await stack.user('Val Viewer', 'viewer');
  const { page } = await open();
  await signIn(page, stack, viewer.key);
  await page.getByTestId('conversation-row').filter({ hasText: 'Chloe C.' }).click();
  await page.getByTestId('read-only').waitFor();
  assert.equal(await page.getByTestId('composer').count(), 0);
  assert.equal(await page.getByTestId('resolve').count(), 0);
  assert.equal(await page.getByTestId('erase').count(), 0);
});

test('an admin erases a contact from the panel and sees the receipt', async () => {
  const admin = await stack.user('Ada Admin', 'admin');
  await stack.customerWrites('+447911123404', 'Please delete my data', 'Fay Forget');
  const { page } = await open({ width: 360, height: 740 });
  await signIn(page, stack, admin.key);
  await page.getByTestId('conversation-row').filter({ hasText: 'Fay Forget' }).waitFor({ timeout: 20_000 });
  await screenshot(page, 'inbox-phone');
  await page.getByTestId('conversation-row').filter({ hasText: 'Fay Forget' }).click();
  await page.getByTestId('erase').click();
  await page.getByTestId('erase-confirm').fill('+447911123404');
  await page.getByTestId('erase-go').click();
  await page.getByTestId('receipt').filter({ hasText: /Erasure \S+: completed/ }).waitFor({ timeout: 30_000 });
  await page.getByText('Contact erased').waitFor();
  await page.getByTestId('receipt').scrollIntoViewIfNeeded();
  await screenshot(page, 'erasure-receipt-phone');
  const found = await stack.api(stack.adminKey, 'GET', '/v1/contacts?q=Fay');
  assert.equal(found.items.length, 0, 'the contact is gone');
});

test('an admin follows a broadcast, schedules and pauses it, and exports its results', async () => {
  const template = {
    name: 'spring_offer', language: 'en_US', category: 'MARKETING',
    components: [{ type: 'BODY', text: 'Hi {{1}}, spring is here.', example: { body_text: [['Ana']] } }],
  };
  await stack.api(stack.adminKey, 'POST', '/v1/templates', template);
  for (let i = 0; ; i += 1) {
    const got = await stack.api(stack.adminKey, 'GET', '/v1/templates/spring_offer');
    if (got.languages.find((t) => t.language === 'en_US')?.status === 'APPROVED') break;
    assert.ok(i < 100, 'the template was approved');
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  // Starting tomorrow: `start` schedules it, so no engine run completes it under the test.
  const tomorrow = new Date(Date.now() + 86_400_000).toISOString();
  const created = await stack.api(stack.adminKey, 'POST', '/v1/broadcasts', {
    name: 'Spring offer', template: { name: 'spring_offer', language: 'en_US' }, audience: { tags_all: ['spring'] },
    parameters: { 1: 'contact.name' }, defaults: { 1: 'there' }, start_at: tomorrow,
    quiet_hours: { start: '22:00', end: '07:00' },
  });
  const admin = await stack.user('Cai Campaigner', 'admin');
  const { page } = await open();
  await signIn(page, stack, admin.key);
  await page.getByTestId('nav-broadcasts').click();
  await page.getByTestId('broadcast-row').filter({ hasText: 'Spring offer' }).click();
  const status = page.getByTestId('broadcast-status');
  await status.filter({ hasText: /^draft/ }).waitFor();
  await page.getByText('quiet 22:00\u201307:00').waitFor();
  await page.getByTestId('broadcast-start').click();
  await status.filter({ hasText: /^scheduled/ }).waitFor();
  await page.getByTestId('broadcast-pause').click();
  await status.filter({ hasText: /^paused/ }).waitFor();
  assert.equal((await stack.api(stack.adminKey, 'GET', `/v1/broadcasts/${created.id}`)).status, 'paused');
  await page.getByTestId('broadcast-export').click();
  await page.getByTestId('broadcast-export-ready').waitFor({ timeout: 30_000 });
  await screenshot(page, 'broadcast');
  // A viewer follows it too, without the actions.
  const viewer = await stack.user('Vic Viewer', 'viewer');
  const other = await open();
  await signIn(other.page, stack, viewer.key);
  await other.page.goto(`${stack.base}/#/broadcasts/${created.id}`);
  await other.page.getByTestId('counters').waitFor();
  assert.equal(await other.page.getByTestId('broadcast-resume').count(), 0);
  assert.equal(await other.page.getByTestId('broadcast-export').count(), 0);
});

test('keyboard only: the sign-in form and the inbox are reachable with visible focus', async () => {
  const { page } = await open();
  await page.goto(`${stack.base}/`);
  await page.keyboard.type(agent.key);
  await page.keyboard.press('Enter');
  await page.getByTestId('who').waitFor();
  await page.keyboard.press('Tab');
  const focused = await page.evaluate(() => {
    const el = document.activeElement;
    return { tag: el.tagName, outline: getComputedStyle(el).outlineStyle };
  });
  assert.notEqual(focused.tag, 'BODY');
  assert.notEqual(focused.outline, 'none', 'focus is visible');
  // Every form control has a label.
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea')]
    .filter((el) => !el.labels?.length && !el.getAttribute('aria-label')).map((el) => el.outerHTML));
  assert.deepEqual(unlabelled, []);
});
