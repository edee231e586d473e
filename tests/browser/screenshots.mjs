// The README's screenshots of the web console, in headless Chromium.
//
//   node screenshots.mjs <base url> <user> <password> <out dir>
//
// <base url> is an appliance that is set up and has machines (`api_load --demo` prints its URL, user and
// password). The script signs in there and saves dashboard.png, machine.png (the page of the machine
// FERRY_SHOT_MACHINE, default sql-prod-01, else of the first protected one, with its charts) and
// points.png. For the setup wizard it starts a second, fresh
// appliance itself (FERRY_APPLIANCE, default target/release/appliance) on a free loopback port with the
// data folder FERRY_SETUP_DATA_DIR (default /var/tmp/ferry-demo-setup, which must be absent or empty:
// the wizard shows the path), saves setup.png (header, setup token and administrator only: the network
// section lists this host's interfaces) and setup-done.png, then stops it and removes the folder.
//
// Every picture is 1280 pixels wide. Any console error, page error or 5xx answer fails the run (exit 1).
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const [baseUrl, user, password, outDir] = process.argv.slice(2);
if (!baseUrl || !user || !password || !outDir) {
  console.error('usage: node screenshots.mjs <base url> <user> <password> <out dir>');
  process.exit(2);
}
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const APPLIANCE = process.env.FERRY_APPLIANCE || path.join(ROOT, 'target', 'release', 'appliance');
const SETUP_DATA_DIR = process.env.FERRY_SETUP_DATA_DIR || '/var/tmp/ferry-demo-setup';
const SHOT_MACHINE = process.env.FERRY_SHOT_MACHINE || 'sql-prod-01';
// Throwaway: the second appliance is removed at the end.
const SETUP_PASSWORD = 'Screenshot-Admin-2024';
const VIEWPORT = { width: 1280, height: 800 };
const STEP_TIMEOUT_MS = 20_000;
// Setup creates the vault (a key derivation with real costs) and the appliance its CA: give them longer.
const SLOW_TIMEOUT_MS = 120_000;
const WHOLE_RUN_MS = 300_000;

let step = 'launch';
let page;
let context;
let profile;
let setupChild;
let setupLog = '';
let setupDirCreated = false;
const problems = [];
const saved = [];

async function cleanup() {
  if (context) await context.close().catch(() => {});
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
  if (setupChild && setupChild.exitCode === null && setupChild.signalCode === null) {
    const exited = new Promise((resolve) => setupChild.once('exit', resolve));
    setupChild.kill('SIGTERM');
    const late = setTimeout(() => setupChild.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(late);
  }
  if (setupDirCreated) fs.rmSync(SETUP_DATA_DIR, { recursive: true, force: true });
}

async function fail(message) {
  console.error(`FAILED at step "${step}": ${message}`);
  if (page) console.error(`  page URL: ${page.url()}`);
  for (const p of problems) console.error(`  [${p.step}] ${p.text}`);
  if (setupChild) console.error(`  setup appliance's last output:\n${setupLog.split('\n').slice(-20).join('\n')}`);
  await cleanup();
  process.exit(1);
}

async function run(name, fn) {
  step = name;
  const before = problems.length;
  try {
    await fn();
  } catch (e) {
    await fail(`${e.stack || e}`);
  }
  if (problems.length > before) await fail('the page reported problems');
}

async function save(name, options) {
  const file = path.join(outDir, name);
  await page.screenshot({ path: file, type: 'png', ...options });
  saved.push(`${file} (${Math.round(fs.statSync(file).size / 1024)} KB)`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// GET /healthz of the setup appliance, trusting only its own CA.
function healthy(port, ca) {
  return new Promise((resolve) => {
    const req = https.get({ host: '127.0.0.1', port, path: '/healthz', ca, timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
  });
}

// Starts the fresh appliance; resolves to [base url, setup token] once it answers.
async function startSetupAppliance() {
  if (!fs.existsSync(APPLIANCE)) throw new Error(`${APPLIANCE} is missing: cargo build --release -p appliance`);
  if (fs.existsSync(SETUP_DATA_DIR) && fs.readdirSync(SETUP_DATA_DIR).length > 0) {
    throw new Error(`${SETUP_DATA_DIR} is not empty: remove it (or set FERRY_SETUP_DATA_DIR)`);
  }
  fs.mkdirSync(SETUP_DATA_DIR, { recursive: true });
  setupDirCreated = true;
  const [mgmt, data] = [await freePort(), await freePort()];
  const env = { ...process.env };
  delete env.RUST_LOG;
  delete env.APPLIANCE_ADMIN_PASSWORD_FILE;
  Object.assign(env, {
    APPLIANCE_DATA_DIR: SETUP_DATA_DIR,
    APPLIANCE_LISTEN_MANAGEMENT: `127.0.0.1:${mgmt}`,
    APPLIANCE_LISTEN_DATA: `127.0.0.1:${data}`,
  });
  setupChild = spawn(APPLIANCE, ['run'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const keep = (chunk) => { setupLog = (setupLog + chunk).slice(-20_000); };
  setupChild.stdout.on('data', keep);
  setupChild.stderr.on('data', keep);
  const tokenFile = path.join(SETUP_DATA_DIR, 'setup-token');
  const caFile = path.join(SETUP_DATA_DIR, 'tls', 'ca.pem');
  const start = Date.now();
  while (Date.now() - start < SLOW_TIMEOUT_MS) {
    if (setupChild.exitCode !== null) throw new Error(`the setup appliance exited with ${setupChild.exitCode}`);
    if (fs.existsSync(tokenFile) && fs.existsSync(caFile) && (await healthy(mgmt, fs.readFileSync(caFile)))) {
      const token = fs.readFileSync(tokenFile, 'utf8').trim();
      if (token) return [`https://127.0.0.1:${mgmt}`, token];
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`the setup appliance did not answer within ${SLOW_TIMEOUT_MS} ms`);
}

const watchdog = setTimeout(() => fail(`the whole run took longer than ${WHOLE_RUN_MS} ms`), WHOLE_RUN_MS);
fs.mkdirSync(outDir, { recursive: true });
profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-chromium-'));
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    // The appliances' certificates come from their own CAs, which this browser profile does not know.
    ignoreHTTPSErrors: true,
    viewport: VIEWPORT,
    deviceScaleFactor: 1,
  });
} catch (e) {
  await fail(`could not start ${CHROMIUM}: ${e.message}`);
}
page = context.pages()[0] || (await context.newPage());
page.setDefaultTimeout(STEP_TIMEOUT_MS);
page.on('console', (msg) => { if (msg.type() === 'error') problems.push({ step, text: msg.text() }); });
page.on('pageerror', (err) => problems.push({ step, text: `uncaught: ${err.message}` }));
page.on('response', (r) => {
  if (r.status() >= 500) problems.push({ step, text: `HTTP ${r.status()} from ${r.request().method()} ${r.url()}` });
});

await run('sign in', async () => {
  await page.goto(`${baseUrl}/login`, { waitUntil: 'load' });
  await page.fill('#login-form [name="username"]', user);
  await page.fill('#login-form [name="password"]', password);
  await Promise.all([page.waitForSelector('#summary'), page.click('#login-submit')]);
});

await run('dashboard', async () => {
  await page.waitForSelector('#machines-table tbody tr');
  await save('dashboard.png', { fullPage: true });
});

await run('machine', async () => {
  // The named machine (its charts tell a story in the demo), else the first one shown as protected.
  const rows = page.locator('#machines-table tbody tr');
  let link = rows.getByRole('link', { name: SHOT_MACHINE, exact: true });
  if ((await link.count()) === 0) {
    link = rows.filter({ has: page.locator('.badge', { hasText: /^protected$/i }) }).first().locator('a');
  }
  const name = (await link.textContent()).trim();
  await Promise.all([page.waitForURL(/\/machines\//), link.click()]);
  await page.waitForSelector('.charts svg');
  const charts = await page.locator('.charts svg').count();
  if (charts !== 2) throw new Error(`${name}: expected 2 charts, found ${charts}`);
  await save('machine.png', { fullPage: true });
});

await run('points', async () => {
  await Promise.all([page.waitForURL(/\/points$/), page.click('#nav-points')]);
  await page.waitForSelector('#points-table tbody tr');
  // The list is 50 rows long: the first screen tells enough, cut below the last whole row.
  const bottom = await page.evaluate((limit) => {
    const rows = [...document.querySelectorAll('#points-table tbody tr')];
    const whole = rows.map((r) => r.getBoundingClientRect().bottom + window.scrollY).filter((b) => b <= limit);
    return whole.length ? whole[whole.length - 1] : limit;
  }, VIEWPORT.height - 16);
  await save('points.png', { clip: { x: 0, y: 0, width: VIEWPORT.width, height: Math.ceil(bottom) + 16 } });
});

let setupUrl;
let setupToken;
await run('start a fresh appliance', async () => {
  [setupUrl, setupToken] = await startSetupAppliance();
});

await run('setup wizard', async () => {
  await page.goto(`${setupUrl}/`, { waitUntil: 'load' });
  if (new URL(page.url()).pathname !== '/setup') throw new Error(`expected /setup, got ${page.url()}`);
  await page.fill('#setup-form input[name="token"]', setupToken);
  await page.fill('#setup-form input[name="admin_password"]', SETUP_PASSWORD);
  await page.fill('#setup-form input[name="admin_password_confirm"]', SETUP_PASSWORD);
  // Blur the last field, so no focus ring is in the picture.
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  // Down to the end of "2. Administrator": the next fieldset ("3. Network") shows this host's
  // interfaces, addresses and name.
  const bottom = await page.evaluate(() => {
    const sets = [...document.querySelectorAll('#setup-form fieldset')];
    const network = sets.find((f) => /^\s*3\./.test(f.querySelector('legend')?.textContent || ''));
    const admin = sets.find((f) => /^\s*2\./.test(f.querySelector('legend')?.textContent || ''));
    if (!network || !admin) return null;
    const a = admin.getBoundingClientRect();
    const n = network.getBoundingClientRect();
    return { admin: a.bottom + window.scrollY, network: n.top + window.scrollY };
  });
  if (!bottom) throw new Error('the setup form has no "2." and "3." sections');
  const height = Math.floor(Math.min(bottom.network - 1, bottom.admin + 12));
  await save('setup.png', { clip: { x: 0, y: 0, width: VIEWPORT.width, height }, fullPage: true });
});

await run('complete setup', async () => {
  await page.click('#setup-submit');
  await page.waitForSelector('#setup-result, .error', { timeout: SLOW_TIMEOUT_MS });
  if (!(await page.$('#setup-result'))) {
    throw new Error(`setup failed: ${(await page.textContent('.error')).trim()}`);
  }
  const vault = (await page.textContent('#setup-result dl')) || '';
  if (!vault.includes(SETUP_DATA_DIR)) throw new Error(`the result does not name ${SETUP_DATA_DIR}`);
  await save('setup-done.png', { fullPage: true });
});

clearTimeout(watchdog);
step = 'clean up';
await cleanup();
console.log(`OK: ${saved.length} screenshots`);
for (const s of saved) console.log(`  ${s}`);
