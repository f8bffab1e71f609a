// The README's "Five lines to a first push", run as written: its push.mjs
// (with the engine from this repository's workspace package) and its page in
// headless Chromium, which must show the pushes. Only the port changes (a free
// one instead of 15674) and the page loads @stomp/stompjs from node_modules
// instead of the CDN (this machine has no route to it).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { ARTIFACTS, launchChromium, ROOT } from './browser.mjs';
import { withTimeout } from './harness.mjs';

const T = { timeout: 60000 };

function section() {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf('## Five lines to a first push');
  assert.ok(start >= 0, 'README has the section');
  const text = readme.slice(start, readme.indexOf('\n## ', start + 1));
  const block = (lang) => {
    const m = new RegExp(`\`\`\`${lang}\\n([\\s\\S]*?)\`\`\``).exec(text);
    assert.ok(m, `a ${lang} block in the section`);
    return m[1];
  };
  return { sh: block('sh'), js: block('js'), html: block('html') };
}

async function freePort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

let child;
after(() => child?.kill('SIGKILL'));

test('the README first push reaches the README page', T, async () => {
  const { sh, js, html } = section();
  assert.match(sh, /^npm install @herald-push\/herald\b/);
  const port = await freePort();
  // Inside the repository, so `@herald-push/herald` resolves to the workspace package.
  const dir = path.join(ARTIFACTS, 'readme-first-push');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'push.mjs'), js.replaceAll('15674', String(port)));
  const stompjs = pathToFileURL(path.join(ROOT, 'node_modules/@stomp/stompjs/bundles/stomp.umd.min.js')).href;
  const page = html
    .replace(/https:\/\/cdn\.jsdelivr\.net\/npm\/@stomp\/stompjs@7\/bundles\/stomp\.umd\.min\.js/, stompjs)
    .replaceAll('15674', String(port));
  assert.notEqual(
    page,
    html.replaceAll('15674', String(port)),
    'the page loads @stomp/stompjs from the CDN URL replaced',
  );
  fs.writeFileSync(path.join(dir, 'push.html'), page);

  let out = '';
  child = spawn(process.execPath, ['push.mjs'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));

  const browser = await launchChromium();
  try {
    const tab = await browser.newPage();
    await tab.goto(pathToFileURL(path.join(dir, 'push.html')).href);
    await withTimeout(
      tab.waitForFunction(() => document.body.textContent.includes('hello at'), null, { timeout: 20000 }),
      25000,
      'a push on the page',
    ).catch((e) => {
      throw new Error(`${e.message}\n--- push.mjs output ---\n${out}`);
    });
    const text = await tab.evaluate(() => document.body.textContent);
    assert.match(text, /hello at \d{4}-\d\d-\d\dT/);
  } finally {
    await withTimeout(browser.close(), 10000, 'browser close').catch(() => {});
  }
});
