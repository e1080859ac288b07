/** A read retried while the server restarts on the same port succeeds once it is back. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { Server, ServerCredentials, type UntypedServiceImplementation } from "@grpc/grpc-js";

import { ConsentClient } from "../src";
import { CheckConsentResponse, ConsentServiceService } from "../src/gen/consent/v1/consent";

/** A server whose CheckConsent allows, on `port` (0: any free one); resolves its port. */
function allowing(port: number): Promise<{ server: Server; port: number }> {
  const server = new Server();
  const impl: UntypedServiceImplementation = {
    checkConsent: (
      call: { request: { topic: string } },
      done: (err: null, res: CheckConsentResponse) => void,
    ) => done(null, CheckConsentResponse.fromPartial({ allowed: true, topic: call.request.topic })),
  };
  server.addService(ConsentServiceService, impl);
  return new Promise((resolve, reject) => {
    server.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (err, bound) =>
      err ? reject(err) : resolve({ server, port: bound }),
    );
  });
}

function stopped(server: Server): Promise<void> {
  return new Promise((resolve) => server.tryShutdown(() => resolve()));
}

test("a read retried while the server restarts in 0.25 s succeeds once it is back", async () => {
  // gRPC's default reconnect backoff (1 s) made every retry fail at once meanwhile.
  const first = await allowing(0);
  const c = new ConsentClient(`127.0.0.1:${first.port}`, { timeoutMs: 5000 });
  const servers = [first.server];
  try {
    assert.equal((await c.checkConsent("t", "sms", "+14155550100", "marketing")).allowed, true);
    first.server.forceShutdown();
    await stopped(first.server);
    const back = new Promise<void>((resolve, reject) =>
      setTimeout(
        () =>
          allowing(first.port).then(({ server }) => {
            servers.push(server);
            resolve();
          }, reject),
        250,
      ),
    );
    const decision = await c.checkConsent("t", "sms", "+14155550100", "marketing");
    assert.equal(decision.allowed, true);
    await back;
  } finally {
    c.close();
    await Promise.all(servers.map((s) => stopped(s)));
  }
});
