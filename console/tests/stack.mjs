// The browser tests' backend: a `make dev` stack (target/debug/devstack: moto, the local
// gateway serving the console and the API, the workers and the Meta sandbox) on free loopback
// ports, and small helpers to drive it as a tenant app and as a customer would.

import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createServer } from 'node:net';
import { mkdirSync, createWriteStream } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, '../..');
export const artifacts = path.join(here, 'artifacts');

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export async function startStack() {
  mkdirSync(artifacts, { recursive: true });
  const ports = [];
  while (ports.length < 3) {
    const port = await freePort();
    if (!ports.includes(port)) ports.push(port);
  }
  const [aws, api, sandbox] = ports;
  const env = { ...process.env };
  delete env.AWS_ENDPOINT_URL;
  delete env.GRAPH_API_BASE;
  Object.assign(env, {
    LOCAL_AWS_PORT: String(aws), LOCAL_API_PORT: String(api), LOCAL_SANDBOX_PORT: String(sandbox),
    RUST_LOG: 'warn',
    TENANT_REQUESTS_PER_SECOND: '100000', TENANT_REQUEST_BURST: '100000',
    // Long enough between sent, delivered and read for the page to show each one.
    SANDBOX_STATUS_DELAY_MS: '3000',
    NO_PROXY: '127.0.0.1,localhost', no_proxy: '127.0.0.1,localhost',
  });
  const target = process.env.CARGO_TARGET_DIR || path.join(root, 'target');
  // The tests run the debug build `make test` made; `make bench-console` times a release one.
  const profile = process.env.CONSOLE_STACK_PROFILE || 'debug';
  const child = spawn(path.join(target, profile, 'devstack'), [], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stderr.pipe(createWriteStream(path.join(artifacts, 'devstack.log')));
  let out = '';
  const banner = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the local stack printed no banner within 120 s')), 120_000);
    child.on('exit', (code) => reject(new Error(`the local stack exited (${code}); see ${artifacts}/devstack.log`)));
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const key = out.match(/Demo API key\s+(\S+)/);
      const tenant = out.match(/Demo tenant\s+(\S+)/);
      if (key && tenant) {
        clearTimeout(timer);
        resolve({ key: key[1], tenant: tenant[1] });
      }
    });
  });
  const stack = {
    base: `http://127.0.0.1:${api}`,
    sandbox: `http://127.0.0.1:${sandbox}`,
    adminKey: banner.key,
    tenant: banner.tenant,
    phoneNumberId: '100000000000001',
    /** The operator CLI against this stack's AWS endpoint; its JSON output. */
    async crmctl(...args) {
      const cliEnv = { ...process.env, AWS_ENDPOINT_URL: `http://127.0.0.1:${aws}`, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test' };
      const { stdout } = await promisify(execFile)(path.join(target, profile, 'crmctl'), args, { cwd: root, env: cliEnv });
      return JSON.parse(stdout);
    },
    async stop() {
      child.kill('SIGINT');
      await new Promise((resolve) => {
        const timer = setTimeout(() => { child.kill('SIGKILL'); resolve(); }, 10_000);
        child.on('exit', () => { clearTimeout(timer); resolve(); });
      });
    },
    /** The tenant API as an app would call it. */
    async api(key, method, route, body) {
      const response = await fetch(`${stack.base}${route}`, {
        method,
        headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await response.text();
      const data = text ? JSON.parse(text) : null;
      if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${text}`);
      return data;
    },
    /** A user of the tenant with an API key of their own. */
    async user(name, role) {
      const user = await stack.api(stack.adminKey, 'POST', '/v1/users', { name, email: `${name.toLowerCase().replace(/\W+/g, '.')}@example.com`, role });
      const created = await stack.api(stack.adminKey, 'POST', `/v1/users/${user.id}/apikeys`, {});
      return { ...user, key: created.api_key };
    },
    /** A customer writes to the tenant's number (Meta's webhook, signed, from the sandbox). */
    async customerWrites(from, text, name) {
      const response = await fetch(`${stack.sandbox}/sandbox/inbound`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ phone_number_id: stack.phoneNumberId, from, text, name }),
      });
      if (!response.ok) throw new Error(`sandbox inbound: ${response.status} ${await response.text()}`);
      return response.json();
    },
  };
  return stack;
}
