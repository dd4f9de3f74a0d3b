// The web console end to end, in a real browser (Debian's chromium driven by playwright-core)
// against the real gateway binary and a real OIDC provider (idp.mjs).
//
// Why it exists: the console's promises are browser promises (a sign-in through the IdP's own
// pages, a list that updates by itself, cookies that stop working after sign-out, forms that
// another site cannot submit), so they are checked in a browser, step by step, with the
// agent's held call and its result as the proof that a click did what it says.
//
// Started by crates/portcullis/tests/console_browser.rs, which starts the IdP and the gateway
// and passes, in the environment:
//   CONSOLE_URL      the admin listener (http://127.0.0.1:PORT); the console is at /console/
//   MCP_URL          the billing target's MCP endpoint
//   AGENT_KEY        the agent's API key
//   IDP_URL, IDP_PID the OIDC provider's issuer and process id (stopped in the last steps)
//   PORTCULLIS_BIN   the gateway binary (for `audit verify-proof`, `sessions verify-bundle`)
//   AUDIT_PUBKEY     the audit log's public key
//   CONSOLE_E2E_READ_PAGES=1   also the sessions, replay and audit pages
//   CONSOLE_E2E_ADMIN_PAGES=1  also the evidence and admin pages
//   CONSOLE_SCREENSHOTS=DIR    write screenshots of the main pages there
//   CHROMIUM         the browser (default /usr/bin/chromium)
// Prints one line per step and exits 0 only if every step passed.

import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

function need(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`console.test.mjs: ${name} is not set (this script is run by crates/portcullis/tests/console_browser.rs)`);
    process.exit(2);
  }
  return value;
}

const CONSOLE = need('CONSOLE_URL');
const MCP_URL = need('MCP_URL');
const AGENT_KEY = need('AGENT_KEY');
const IDP_URL = need('IDP_URL');
const IDP_PID = Number(need('IDP_PID'));
const BIN = need('PORTCULLIS_BIN');
const AUDIT_PUBKEY = need('AUDIT_PUBKEY');
const READ_PAGES = process.env.CONSOLE_E2E_READ_PAGES === '1';
const ADMIN_PAGES = process.env.CONSOLE_E2E_ADMIN_PAGES === '1';
const SHOTS = process.env.CONSOLE_SCREENSHOTS || '';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const LEAD = { login: 'finance.lead', name: 'Fiona Finance' };
const SESSION_COOKIE = '__Host-portcullis-console';
const work = mkdtempSync(join(tmpdir(), 'portcullis-console-e2e-'));

// ---------------------------------------------------------------------------------------
// Steps

let passed = 0;
let current = null;

// Downloads what the link at `selector` serves into `file`. A bundle or a proof exists only
// once a signed checkpoint covers its events; until then the link answers with a page
// saying "Not yet signed, try again in a moment", and so does this: back, and again.
async function downloadFrom(page, selector, file) {
  const from = page.url();
  for (let attempt = 1; ; attempt += 1) {
    const download = page.waitForEvent('download', { timeout: 5_000 }).catch(() => null);
    await page.locator(selector).click();
    const got = await download;
    if (got && (await got.failure()) === null) {
      await got.saveAs(file);
      return;
    }
    const said = (await page.locator('main').textContent().catch(() => '')) || '';
    assert.ok(attempt < 20 && /Not yet signed/.test(said), `no download from ${selector}: ${said}`);
    console.log(`    ${selector}: not yet signed, again (attempt ${attempt})`);
    await sleep(500);
    await page.goto(from);
  }
}

async function step(name, fn) {
  const started = Date.now();
  current = name;
  await fn();
  passed += 1;
  console.log(`ok ${passed} - ${name} (${Date.now() - started} ms)`);
}

function skip(name, why) {
  console.log(`skipped - ${name}: ${why}`);
}

async function shot(page, name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`) });
}

// ---------------------------------------------------------------------------------------
// The agent: streamable HTTP MCP, as in the demo's curl lines

/** Every JSON-RPC message of a body: the JSON itself, or each `data:` of an SSE stream. */
function messages(text) {
  try {
    return [JSON.parse(text)];
  } catch {
    const out = [];
    let data = '';
    for (const line of `${text}\n`.split('\n')) {
      if (line.startsWith('data:')) data += line.slice(5).trimStart();
      else if (line.trim() === '' && data) {
        out.push(JSON.parse(data));
        data = '';
      }
    }
    return out;
  }
}

let nextId = 1;

/** Starts a tools/call; returns { settled, done } where done resolves with the answer. */
function agentCall(tool, args, reason) {
  const id = nextId++;
  const meta = {
    'io.modelcontextprotocol/protocolVersion': '2026-07-28',
    'io.modelcontextprotocol/clientCapabilities': {},
    'io.modelcontextprotocol/clientInfo': { name: 'console-e2e-agent', version: '1' },
    progressToken: `progress-${id}`,
  };
  if (reason) meta['dev.portcullis/reason'] = reason;
  const call = { settled: false, id };
  call.done = fetch(MCP_URL, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${AGENT_KEY}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2026-07-28',
      'mcp-method': 'tools/call',
      'mcp-name': tool,
    },
    body: JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: tool, arguments: args, _meta: meta } }),
  })
    .then(async (response) => {
      const text = await response.text();
      const all = messages(text);
      return { status: response.status, text, all, answer: all.find((m) => m.id === id) };
    })
    .finally(() => {
      call.settled = true;
    });
  call.done.catch(() => {});
  return call;
}

async function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------
// The browser

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.setDefaultNavigationTimeout(15_000);
  return { context, page };
}

const url = (path) => `${CONSOLE}${path}`;

/** From the console's sign-in page, through the IdP's login (and consent) pages, back. */
async function signInAtIdp(page, who) {
  await page.getByTestId('sign-in-oidc').click();
  await page.waitForURL((u) => u.href.startsWith(`${IDP_URL}/interaction/`));
  await page.locator('input[name=login]').fill(who.login);
  await page.locator('input[name=password]').fill('correct horse battery staple');
  await page.getByRole('button', { name: 'Sign-in' }).click();
  // The consent page, the first time this client asks this person for these scopes.
  await page.waitForURL((u) => !u.href.startsWith(`${IDP_URL}/auth/`) && (u.href.startsWith(CONSOLE) || u.href.startsWith(`${IDP_URL}/interaction/`)));
  if (page.url().startsWith(`${IDP_URL}/interaction/`)) {
    await page.getByRole('button', { name: 'Continue' }).click();
  }
  await page.waitForURL((u) => u.href.startsWith(CONSOLE));
}

let failure = null;
const { context: ctxA, page } = await newPage();
let approvalId;
let requestEvent;
let refund;

try {
  // b. Sign-in through the IdP's own pages.
  await step('the console sends a visitor to sign in; the IdP signs the finance lead in', async () => {
    const response = await page.goto(url('/console/'));
    assert.equal(response.status(), 200);
    assert.match(page.url(), /\/console\/sign-in\?next=/, 'not sent to the sign-in page');
    await shot(page, 'sign-in');
    await signInAtIdp(page, LEAD);
    assert.equal(new URL(page.url()).pathname, '/console/approvals');
    assert.equal((await page.getByTestId('signed-in-as').textContent()).trim(), LEAD.name);
  });

  // c. The inbox is open before the call is made; the hold appears without a reload.
  await step('a held refund appears in the open inbox without a reload', async () => {
    assert.equal(await page.locator('tr[data-approval]').count(), 0, 'the inbox is not empty at start');
    // The live script is connected to the event stream before the call is made.
    await page.waitForFunction(() => document.querySelector('[data-live]') !== null);
    await sleep(500);
    await page.evaluate(() => {
      window.e2eNotReloaded = true;
    });
    const refetched = page.waitForResponse((r) => new URL(r.url()).pathname === '/console/approvals/list', { timeout: 5_000 });
    refund = agentCall('refund_payment', { customer: 'cus_1001', amount: 25 }, 'customer asked for a refund of a duplicate charge');
    // Within 5 s: the script's fallback poll runs every 10 s from the page's load, so only
    // the server-sent event can bring the row this soon.
    const row = page.locator('tr[data-approval]');
    await row.first().waitFor({ state: 'visible', timeout: 5_000 });
    assert.equal((await refetched).status(), 200);
    assert.equal(await page.evaluate(() => window.e2eNotReloaded), true, 'the page was reloaded');
    const text = await row.first().innerText();
    assert.match(text, /refund_payment/);
    assert.match(text, /billing-agent/);
    assert.equal((await page.getByTestId('pending-count').innerText()).trim(), '1');
    approvalId = await row.first().getAttribute('data-approval');
    assert.ok(approvalId, 'the row names no approval');
    await sleep(300);
    assert.equal(refund.settled, false, "the agent's call did not wait at the gateway");
    await shot(page, 'inbox');
  });

  // d. Approve with a reason; the agent's call completes with the real refund.
  await step("approving in the browser releases the agent's call with the refund's result", async () => {
    await page.locator(`tr[data-approval="${approvalId}"] a`).first().click();
    await page.waitForURL((u) => u.pathname === `/console/approvals/${approvalId}`);
    assert.equal((await page.getByTestId('approval-status').innerText()).trim(), 'pending');
    await assert.doesNotReject(page.getByText('customer asked for a refund of a duplicate charge').waitFor());
    const link = page.locator('a[href^="/console/audit/"]');
    if (await link.count()) requestEvent = (await link.first().getAttribute('href')).split('/').pop();
    await page.locator('textarea#reason').fill('duplicate charge confirmed on the March invoice');
    await shot(page, 'approval');
    assert.equal(refund.settled, false, "the agent's call ended before the decision");
    await page.locator('button[name=decision][value=approve]').click();
    await page.waitForURL((u) => u.searchParams.get('done') === 'approved');
    await page.getByText('Approved.').waitFor();
    assert.equal((await page.getByTestId('approval-status').innerText()).trim(), 'approved');
    const result = await within(refund.done, 15_000, "the agent's call");
    assert.equal(result.status, 200, result.text);
    assert.ok(result.answer, `no answer in ${result.text}`);
    assert.equal(result.answer.error, undefined, result.text);
    assert.notEqual(result.answer.result.isError, true, result.text);
    assert.equal(result.answer.result.content[0].text, 'refunded 25.00 USD to cus_1001');
  });

  // e. Replay and evidence, once the sessions and audit pages are there.
  if (READ_PAGES) {
    await step('the session of the call replays, and its bundle verifies', async () => {
      const listed = await page.goto(url('/console/sessions'));
      assert.equal(listed.status(), 200, '/console/sessions is not there (CONSOLE_E2E_READ_PAGES=0 leaves these steps out)');
      const rows = page.locator('tr[data-session]');
      await rows.first().waitFor();
      await shot(page, 'sessions');
      const ours = rows.filter({ hasText: 'billing-agent' }).first();
      await ours.locator('a').first().click();
      await page.waitForURL((u) => /^\/console\/sessions\/[^/]+$/.test(u.pathname));
      const items = page.locator('ol#timeline > li');
      const total = await items.count();
      assert.ok(total >= 1, `the session's timeline has ${total} steps`);
      await page.locator('button[data-testid=replay]').click();
      // The replay hides the steps and brings them back one by one, at the recorded pace.
      await page.locator('#replay-status').filter({ hasText: `Replay finished: ${total} step` }).waitFor({ timeout: 30_000 });
      assert.equal(await page.locator('ol#timeline > li:visible').count(), total);
      await page.getByText('refund_payment').first().waitFor();
      await shot(page, 'replay');
      const bundle = join(work, 'session-bundle.json');
      await downloadFrom(page, 'a[data-testid=export]', bundle);
      JSON.parse(readFileSync(bundle, 'utf8'));
      execFileSync(BIN, ['sessions', 'verify-bundle', bundle, '--pubkey', AUDIT_PUBKEY], { stdio: 'pipe' });
    });

    await step("the refund's request event has a proof that verifies offline", async () => {
      const searched = await page.goto(url('/console/audit'));
      assert.equal(searched.status(), 200, '/console/audit is not there (CONSOLE_E2E_READ_PAGES=0 leaves these steps out)');
      const rows = page.locator('tr[data-event]');
      await rows.first().waitFor();
      await shot(page, 'audit');
      let row = requestEvent ? page.locator(`tr[data-event="${requestEvent}"]`) : rows.filter({ hasText: 'refund_payment' });
      if ((await row.count()) === 0) row = rows.filter({ hasText: 'refund_payment' });
      await row.first().locator('a').first().click();
      await page.waitForURL((u) => /^\/console\/audit\/[^/]+$/.test(u.pathname));
      await shot(page, 'audit-event');
      const proof = join(work, 'proof.json');
      await downloadFrom(page, 'a[data-testid=proof]', proof);
      const out = execFileSync(BIN, ['audit', 'verify-proof', proof, '--pubkey', AUDIT_PUBKEY], { encoding: 'utf8', stdio: 'pipe' });
      console.log(`    verify-proof: ${out.trim().split('\n')[0]}`);
    });
  } else {
    skip('sessions, replay and audit pages', 'CONSOLE_E2E_READ_PAGES is not 1');
  }

  if (ADMIN_PAGES) {
    await step('the evidence and admin pages open', async () => {
      for (const [path, name] of [['/console/evidence', 'evidence'], ['/console/admin', 'admin']]) {
        const response = await page.goto(url(path));
        assert.equal(response.status(), 200, `${path}: ${response.status()} (CONSOLE_E2E_ADMIN_PAGES=0 leaves this step out)`);
        assert.equal(new URL(page.url()).pathname, path);
        await shot(page, name);
      }
    });
  } else {
    skip('evidence and admin pages', 'CONSOLE_E2E_ADMIN_PAGES is not 1');
  }

  // f. Security in the browser.
  let second;
  let secondId;
  await step('a form posted from another origin is refused and decides nothing', async () => {
    second = agentCall('refund_payment', { customer: 'cus_1002', amount: 40 }, 'second refund, to be refused by a forged form');
    await page.goto(url('/console/approvals'));
    const row = page.locator('tr[data-approval]').filter({ hasText: 'refund_payment' });
    await row.first().waitFor({ timeout: 10_000 });
    secondId = await row.first().getAttribute('data-approval');
    assert.notEqual(secondId, approvalId);
    await page.goto(url(`/console/approvals/${secondId}`));
    // Even with this session's own CSRF token and the approval's digest in the forged form
    // (as if they had leaked), the Origin check alone refuses it: the cookie does go along,
    // another port on 127.0.0.1 being the same site.
    const csrf = await page.locator('form.decide input[name=csrf]').inputValue();
    const digest = await page.locator('form.decide input[name=digest]').inputValue();
    const attacker = createServer((_req, res) => {
      res.setHeader('content-type', 'text/html');
      res.end(`<!doctype html><title>Win a prize</title>
<form method="post" action="${CONSOLE}/console/approvals/${secondId}/decide">
<input type="hidden" name="csrf" value="${csrf}"><input type="hidden" name="digest" value="${digest}">
<input type="hidden" name="decision" value="approve"><input type="hidden" name="reason" value="forged">
</form><script>document.forms[0].submit()</script>`);
    });
    await new Promise((resolve) => attacker.listen(0, '127.0.0.1', resolve));
    try {
      const decided = page.waitForResponse((r) => r.url().endsWith(`/console/approvals/${secondId}/decide`));
      await page.goto(`http://127.0.0.1:${attacker.address().port}/`);
      const response = await decided;
      assert.equal(response.status(), 403);
      assert.equal(response.request().method(), 'POST');
      await page.getByText('did not come from a console page').waitFor();
    } finally {
      attacker.close();
    }
    await page.goto(url(`/console/approvals/${secondId}`));
    assert.equal((await page.getByTestId('approval-status').innerText()).trim(), 'pending');
    assert.equal(second.settled, false, "the agent's second call ended");
  });

  // A second browser, signed in too: it keeps working while the IdP is down (step g).
  const { context: ctxB, page: pageB } = await newPage();
  await step('a second browser signs in through the IdP', async () => {
    await pageB.goto(url('/console/approvals'));
    await signInAtIdp(pageB, LEAD);
    assert.equal((await pageB.getByTestId('signed-in-as').textContent()).trim(), LEAD.name);
  });

  await step('after sign-out, the old session cookie opens nothing', async () => {
    const cookies = (await ctxA.cookies(CONSOLE)).filter((c) => c.name === SESSION_COOKIE);
    assert.equal(cookies.length, 1, 'no session cookie');
    await page.goto(url('/console/approvals'));
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForURL((u) => u.pathname === '/console/sign-in' && u.searchParams.get('signed_out') === '1');
    await page.getByText('You are signed out of the console.').waitFor();
    const { context: replayed, page: thief } = await newPage();
    try {
      await replayed.addCookies(cookies);
      await thief.goto(url('/console/approvals'));
      assert.equal(new URL(thief.url()).pathname, '/console/sign-in', `the old cookie opened ${thief.url()}`);
      assert.equal(await thief.getByTestId('signed-in-as').count(), 0);
      const list = await thief.evaluate(async () => (await fetch('/console/approvals/list')).status);
      assert.equal(list, 401);
    } finally {
      await replayed.close();
    }
  });

  // g. The IdP goes down.
  await step('with the IdP down, sign-in says so (502) and the rest keeps working', async () => {
    process.kill(IDP_PID, 'SIGTERM');
    const port = Number(new URL(IDP_URL).port);
    for (let i = 0; ; i += 1) {
      const up = await new Promise((resolve) => {
        const socket = connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true); });
        socket.on('error', () => resolve(false));
      });
      if (!up) break;
      assert.ok(i < 100, 'the IdP did not stop');
      await sleep(50);
    }
    // The gateway reads the IdP's endpoints at most once a second: past that, it finds it gone.
    await sleep(1100);
    await page.goto(url('/console/sign-in'));
    const started = page.waitForResponse((r) => new URL(r.url()).pathname === '/console/auth/oidc');
    await page.getByTestId('sign-in-oidc').click();
    const response = await started;
    assert.equal(response.status(), 502);
    await page.getByRole('heading', { name: 'Identity provider unavailable' }).waitFor();
    await page.getByText('held requests keep waiting').waitFor();
    await shot(page, 'idp-down');
    // The gateway still answers agents.
    const lookup = await within(agentCall('lookup_customer', { customer: 'cus_1001' }).done, 10_000, 'lookup_customer');
    assert.equal(lookup.status, 200, lookup.text);
    assert.ok(lookup.answer?.result && lookup.answer.result.isError !== true, lookup.text);
    // The signed-in browser still decides: it denies the second refund, and the agent hears.
    await pageB.goto(url(`/console/approvals/${secondId}`));
    await pageB.locator('textarea#reason').fill('not a duplicate: the customer was charged once');
    await pageB.locator('button[name=decision][value=deny]').click();
    await pageB.waitForURL((u) => u.searchParams.get('done') === 'denied');
    assert.equal((await pageB.getByTestId('approval-status').innerText()).trim(), 'denied');
    const denied = await within(second.done, 15_000, "the agent's second call");
    assert.ok(denied.answer, `no answer in ${denied.text}`);
    assert.ok(denied.answer.error || denied.answer.result?.isError === true, `not refused: ${denied.text}`);
    assert.doesNotMatch(denied.text, /refunded/);
    await ctxB.close();
  });
} catch (e) {
  failure = e;
  console.log(`not ok - ${current}`);
  console.log(e && e.stack ? e.stack : String(e));
  try {
    console.log(`    page: ${page.url()}`);
    console.log(`    text: ${(await page.locator('body').innerText()).slice(0, 1500).replace(/\n/g, '\n          ')}`);
    const path = join(tmpdir(), `portcullis-console-e2e-failure-${process.pid}.png`);
    await page.screenshot({ path });
    console.log(`    screenshot: ${path}`);
  } catch {}
} finally {
  await browser.close();
  rmSync(work, { recursive: true, force: true });
}

console.log(`console e2e: ${passed} passed, ${failure ? 1 : 0} failed`);
process.exit(failure ? 1 : 0);
