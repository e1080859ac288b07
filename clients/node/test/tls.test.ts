/** TLS and mTLS options against a server that requires client certificates. */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import { ConsentClient, ConsentError, Unavailable } from "../src";
import { ServerProcess } from "./server";

const dir = mkdtempSync(path.join(tmpdir(), "consent-node-tls-"));
const file = (name: string) => path.join(dir, name);

function openssl(...args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
}

/** A throwaway CA, a server certificate for 127.0.0.1 and a client certificate. */
function makePki(): void {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  openssl(
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=node test CA",
  );
  for (const [name, ext] of [
    ["server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"],
    ["client", "extendedKeyUsage=clientAuth\n"],
  ]) {
    writeFileSync(file(`${name}.ext`), ext);
    openssl("req", ...ec, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
    openssl(
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      `${name}.pem`,
      "-days",
      "2",
      "-extfile",
      `${name}.ext`,
    );
  }
}

makePki();
const mtls = { tlsCa: file("ca.pem"), tlsCert: file("client.pem"), tlsKey: file("client.key") };
const server = new ServerProcess(
  {
    CONSENT_TLS_CERT: file("server.pem"),
    CONSENT_TLS_KEY: file("server.key"),
    CONSENT_TLS_CLIENT_CA: file("ca.pem"),
  },
  mtls,
);

before(async () => {
  await server.start();
});
after(async () => {
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function outcome(client: ConsentClient): Promise<string> {
  try {
    const d = await client.checkConsent("acme", "sms", "+12025550100", "marketing");
    return d.allowed ? "allowed" : "blocked";
  } catch (e) {
    assert.ok(e instanceof ConsentError);
    return e instanceof Unavailable ? "unavailable" : e.name;
  } finally {
    client.close();
  }
}

test("mTLS with paths or PEM text; refused without a client certificate or without TLS", async () => {
  const opts = { timeoutMs: 3000, retries: 0 };
  assert.equal(await outcome(new ConsentClient(server.target, { ...opts, ...mtls })), "allowed");
  const pemText = {
    tlsCa: readFileSync(file("ca.pem"), "utf8"),
    tlsCert: readFileSync(file("client.pem")),
    tlsKey: readFileSync(file("client.key"), "utf8"),
  };
  assert.equal(await outcome(new ConsentClient(server.target, { ...opts, ...pemText })), "allowed");
  assert.equal(
    await outcome(new ConsentClient(server.target, { ...opts, tlsCa: file("ca.pem") })),
    "unavailable",
  );
  assert.equal(await outcome(new ConsentClient(server.target, opts)), "unavailable");
  assert.throws(
    () => new ConsentClient(server.target, { tlsCa: file("missing.pem") }),
    /tlsCa: cannot read/,
  );
});
