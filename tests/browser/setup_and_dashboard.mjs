// The first-boot wizard and the dashboard as a person uses them, in headless Chromium.
//
//   node setup_and_dashboard.mjs <base url> <setup token> <artifacts dir> \
//        [<vCenter url> <vCenter user> <vCenter password> <vCenter thumbprint>]
//
// Opens the appliance (which must not be set up yet), is sent to /setup, completes the wizard with the
// default vault, checks the passphrases and the recovery-kit download, signs in (a wrong password
// first), walks every dashboard page, adds the vCenter (when one is given) through its form, opens its
// VMs, one VM and the push jobs, and signs out. Every step leaves a full-page PNG in the artifacts
// folder. Any console error, uncaught page error, CSP violation or 5xx answer fails the run. On failure
// it prints the step, the selector, the page URL and the path of a screenshot, and exits 1.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [baseUrl, setupToken, artifacts, vcUrl, vcUser, vcPassword, vcThumbprint] = process.argv.slice(2);
if (!baseUrl || !setupToken || !artifacts) {
  console.error('usage: node setup_and_dashboard.mjs <base url> <setup token> <artifacts dir>');
  process.exit(2);
}
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
// Accepted by the appliance's password rules (length, two kinds of characters).
const ADMIN_PASSWORD = 'Wizard-Admin-Pass-2024';
const WRONG_PASSWORD = 'Not-The-Password-2024';
const STEP_TIMEOUT_MS = 20_000;
// Setup creates the vault (a key derivation with real costs): give it longer.
const SETUP_TIMEOUT_MS = 120_000;
const WHOLE_RUN_MS = 300_000;

fs.mkdirSync(artifacts, { recursive: true });
const shots = [];
let step = 'launch';
let page;
// Console errors, page errors, CSP violations and 5xx answers, each with the step it happened in.
const problems = [];
// Console errors a step expects (a refused sign-in logs the 401 of its request).
let tolerated = [];

class StepError extends Error {}

async function screenshot(name) {
  const file = path.join(artifacts, `${String(shots.length + 1).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  shots.push(file);
  return file;
}

async function fail(message) {
  let where = '(no page)';
  let shot = '(none)';
  if (page) {
    where = page.url();
    try {
      shot = path.join(artifacts, `FAILED-${step.replace(/[^a-z0-9]+/gi, '-')}.png`);
      await page.screenshot({ path: shot, fullPage: true });
    } catch (e) {
      shot = `(screenshot failed: ${e.message})`;
    }
  }
  console.error(`FAILED at step "${step}": ${message}`);
  console.error(`  page URL:   ${where}`);
  console.error(`  screenshot: ${shot}`);
  if (problems.length) {
    console.error('  console/page problems so far:');
    for (const p of problems) console.error(`    [${p.step}] ${p.text} (${p.url})`);
  }
  process.exit(1);
}

// Waits for a visible element; a timeout names the selector and what it was meant to be.
async function need(selector, what, timeout = STEP_TIMEOUT_MS) {
  try {
    return await page.waitForSelector(selector, { state: 'visible', timeout });
  } catch (e) {
    throw new StepError(`selector ${selector} (${what}) did not appear within ${timeout} ms: ${e.message.split('\n')[0]}`);
  }
}

// Like need(), but when the page shows an error (`.error`) instead, fails at once with its text.
async function needUnlessError(selector, what, timeout = STEP_TIMEOUT_MS) {
  try {
    await page.waitForSelector(`${selector}, .error`, { state: 'visible', timeout });
  } catch (e) {
    throw new StepError(`selector ${selector} (${what}) did not appear within ${timeout} ms: ${e.message.split('\n')[0]}`);
  }
  if (!(await page.$(selector))) {
    const shown = (await page.textContent('.error')) || '';
    throw new StepError(`expected ${selector} (${what}), but the page shows the error: ${shown.trim()}`);
  }
  return need(selector, what);
}

// The text a person sees in an element (an input's value, else its text).
async function textOf(selector, what) {
  const el = await need(selector, what);
  const text = await el.evaluate((e) => ('value' in e && typeof e.value === 'string' && e.value ? e.value : e.textContent) || '');
  return text.trim();
}

function pathname() {
  return new URL(page.url()).pathname;
}

function expectPath(want, why) {
  if (pathname() !== want) throw new StepError(`expected to be on ${want} (${why}), but the page is ${page.url()}`);
}

// Runs one step; fails the run with the step's name when it throws or the page reported problems.
async function run(name, fn) {
  step = name;
  const before = problems.length;
  try {
    await fn();
  } catch (e) {
    await fail(e instanceof StepError ? e.message : `${e.stack || e}`);
  }
  const fresh = problems.slice(before).filter((p) => !tolerated.some((re) => re.test(p.text)));
  tolerated = [];
  if (fresh.length) {
    await fail(`the page reported problems:\n${fresh.map((p) => `    ${p.text} (${p.url})`).join('\n')}`);
  }
}

// Clicks a link that loads another page and waits until a page whose path passes `wantPath` loaded.
async function clickAndLoad(selector, what, wantPath) {
  const el = await need(selector, what);
  try {
    await Promise.all([
      page.waitForURL((u) => wantPath(u.pathname), { timeout: STEP_TIMEOUT_MS, waitUntil: 'load' }),
      el.click(),
    ]);
  } catch (e) {
    throw new StepError(`clicking ${selector} (${what}) did not lead to the expected page: ${e.message.split('\n')[0]}`);
  }
}

const watchdog = setTimeout(() => fail(`the whole run took longer than ${WHOLE_RUN_MS} ms`), WHOLE_RUN_MS);

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    // The appliance's certificate comes from its own CA, which this browser profile does not know.
    ignoreHTTPSErrors: true,
    acceptDownloads: true,
    viewport: { width: 1280, height: 900 },
  });
} catch (e) {
  await fail(`could not start ${CHROMIUM}: ${e.message}`);
}
page = context.pages()[0] || (await context.newPage());
page.setDefaultTimeout(STEP_TIMEOUT_MS);
// CSP violations also appear as console errors; this makes sure each is reported with its directive.
await context.addInitScript(() => {
  document.addEventListener('securitypolicyviolation', (e) => {
    console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || '(inline)'}`);
  });
});
page.on('console', (msg) => {
  // The resource the message is about (a failed load names it only here), else the page.
  if (msg.type() === 'error') problems.push({ step, url: msg.location()?.url || page.url(), text: msg.text() });
});
page.on('pageerror', (err) => problems.push({ step, url: page.url(), text: `uncaught: ${err.message}` }));
page.on('response', (r) => {
  if (r.status() >= 500) problems.push({ step, url: r.url(), text: `HTTP ${r.status()} from ${r.request().method()} ${r.url()}` });
});

let vaultPassphrase = '';

await run('open / before setup', async () => {
  const r = await page.goto(`${baseUrl}/`, { waitUntil: 'load' });
  if (!r) throw new StepError('no answer for /');
  expectPath('/setup', 'an appliance that is not set up sends every page to the wizard');
  await need('#setup-form', 'the setup form');
  await screenshot('setup-wizard');
});

await run('fill and submit the setup form', async () => {
  await need('#setup-form input[name="token"]', 'setup token field');
  await page.fill('#setup-form input[name="token"]', setupToken);
  await page.fill('#setup-form input[name="admin_password"]', ADMIN_PASSWORD);
  await page.fill('#setup-form input[name="admin_password_confirm"]', ADMIN_PASSWORD);
  await screenshot('setup-filled');
  await (await need('#setup-submit', 'setup submit button')).click();
  await needUnlessError('#setup-result', 'the setup result (passphrases, recovery kit)', SETUP_TIMEOUT_MS);
  await screenshot('setup-result');
});

await run('setup result shows the passphrases', async () => {
  vaultPassphrase = await textOf('#vault-passphrase', 'vault passphrase');
  if (!vaultPassphrase) throw new StepError('#vault-passphrase is empty');
  const reg = await textOf('#registration-passphrase', 'registration passphrase');
  if (!reg) throw new StepError('#registration-passphrase is empty');
  if (reg === vaultPassphrase) throw new StepError('the vault and registration passphrases are the same');
});

await run('download the recovery kit', async () => {
  const link = await need('#recovery-kit-download', 'recovery kit download link');
  let download;
  try {
    [download] = await Promise.all([page.waitForEvent('download', { timeout: STEP_TIMEOUT_MS }), link.click()]);
  } catch (e) {
    throw new StepError(`clicking #recovery-kit-download started no download: ${e.message.split('\n')[0]}`);
  }
  const file = await download.path();
  const kit = fs.readFileSync(file, 'utf8');
  if (!kit.includes(vaultPassphrase)) {
    throw new StepError(`the recovery kit (${download.suggestedFilename()}, ${kit.length} bytes) does not contain the vault passphrase`);
  }
});

await run('continue to sign in', async () => {
  await clickAndLoad('#continue-login', 'continue to sign-in link', (p) => p === '/login');
  await need('#login-form', 'the sign-in form');
  await screenshot('login');
});

await run('sign in with a wrong password', async () => {
  // The refused request's 401 is logged by Chromium when the form submits with fetch().
  tolerated = [/Failed to load resource: the server responded with a status of 401/];
  await page.fill('#login-form [name="username"]', 'admin');
  await page.fill('#login-form [name="password"]', WRONG_PASSWORD);
  await (await need('#login-submit', 'sign-in button')).click();
  await need('.error', 'the error shown for a wrong password');
  expectPath('/login', 'a wrong password keeps the person on the sign-in page');
  await screenshot('login-wrong-password');
});

await run('sign in', async () => {
  await need('#login-form', 'the sign-in form');
  await page.fill('#login-form [name="username"]', 'admin');
  await page.fill('#login-form [name="password"]', ADMIN_PASSWORD);
  await (await need('#login-submit', 'sign-in button')).click();
  await needUnlessError('#summary', 'the dashboard summary');
  await need('#machines-table', 'the protected machines table');
  await screenshot('dashboard');
});

for (const [id, name] of [['#nav-agents', 'agents'], ['#nav-points', 'points'], ['#nav-restores', 'restores'],
  ['#nav-vcenters', 'vcenters'], ['#nav-push-jobs', 'push-jobs'], ['#nav-audit', 'audit'],
  ['#nav-settings', 'settings']]) {
  await run(`open ${name}`, async () => {
    let main;
    const onNav = (r) => { if (r.request().isNavigationRequest() && r.frame() === page.mainFrame()) main = r; };
    page.on('response', onNav);
    try {
      const from = pathname();
      await clickAndLoad(id, `navigation link to ${name}`, (p) => p !== from);
    } finally {
      page.off('response', onNav);
    }
    if (!main) throw new StepError(`clicking ${id} loaded no page`);
    if (main.status() >= 400) throw new StepError(`${id} loaded ${main.url()} with HTTP ${main.status()}`);
    if (pathname() === '/login') throw new StepError(`${id} sent a signed-in person back to /login`);
    await need('#logout', 'the sign-out control on every dashboard page');
    await screenshot(name);
  });
}

if (vcUrl) {
  await run('add a vCenter', async () => {
    await clickAndLoad('#nav-vcenters', 'navigation link to vCenters', (p) => p === '/vcenters');
    await need('#vcenter-add-form', 'the add-vCenter form');
    await page.fill('#vcenter-add-form [name="url"]', vcUrl);
    await page.fill('#vcenter-add-form [name="username"]', vcUser);
    await page.fill('#vcenter-add-form [name="password"]', vcPassword);
    await page.fill('#vcenter-add-form [name="thumbprint"]', vcThumbprint);
    await (await need('#vcenter-add-form button[type="submit"]', 'add button')).click();
    await needUnlessError('.notice.ok', 'the notice that the vCenter is added');
    await need('#vcenters-table a[href$="/vms"]', 'the link to its VMs');
    await screenshot('vcenters');
  });

  await run('open the VMs of the vCenter', async () => {
    await clickAndLoad('#vcenters-table a[href$="/vms"]', 'link to the VMs', (p) => p.endsWith('/vms'));
    // Discovery lists the VMs a moment after the vCenter is added.
    for (let i = 0; i < 40 && !(await page.$('#vms-table a[href*="/vms/"]')); i++) {
      await page.waitForTimeout(250);
      await page.reload({ waitUntil: 'load' });
    }
    await need('#vms-table a[href*="/vms/"]', 'a discovered VM');
    await need('#vm-filter', 'the name and power filter');
    await screenshot('vms');
  });

  await run('filter the VMs', async () => {
    await page.selectOption('#vm-filter [name="power_state"]', 'poweredOn');
    await Promise.all([page.waitForURL((u) => u.search.includes('power_state=poweredOn'), { waitUntil: 'load' }),
      page.click('#vm-filter button[type="submit"]')]);
    await need('#vms-table', 'the filtered VM table');
  });

  await run('open a VM', async () => {
    await clickAndLoad('#vms-table a[href*="/vms/"]', 'a VM', (p) => /\/vms\/[^/]+$/.test(p));
    await need('#protection', 'the protection section');
    await need('#vm-disks', 'the disks table');
    await need('#protect-form', 'the enable-protection form (admin, powered-on VM)');
    await screenshot('vm');
  });
}

await run('sign out', async () => {
  const from = pathname();
  await clickAndLoad('#logout', 'sign-out control', (p) => p !== from);
  await page.goto(`${baseUrl}/`, { waitUntil: 'load' });
  expectPath('/login', 'after signing out, / asks to sign in again');
  await screenshot('signed-out');
});

clearTimeout(watchdog);
await context.close();
fs.rmSync(profile, { recursive: true, force: true });
console.log(`OK: setup wizard, sign-in and ${shots.length} screenshots in ${artifacts}`);
for (const s of shots) console.log(`  ${s}`);
