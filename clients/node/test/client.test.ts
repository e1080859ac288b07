/** The TypeScript client against the real server process (embedded store). */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  AlreadyExists,
  Code,
  ConsentClient,
  ConsentError,
  DeadlineExceeded,
  FailedPrecondition,
  InvalidArgument,
  NotFound,
  PermissionDenied,
  RecipientOptedOut,
  type RetryEvent,
  SendBlocked,
  Unauthenticated,
  Unavailable,
} from "../src";
import { ServerProcess } from "./server";

const TENANT = "acme";
const TOPIC = "marketing";

/** A fresh WhatsApp number per test, so tests never see each other's records. */
function phone(): string {
  return "+9198" + String(Math.floor(Math.random() * 1e8)).padStart(8, "0");
}

async function rejection(p: Promise<unknown>): Promise<ConsentError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof ConsentError, `not a ConsentError: ${String(e)}`);
    return e;
  }
  assert.fail("the call succeeded");
}

describe("against a running server", () => {
  const server = new ServerProcess();
  let client: ConsentClient;

  before(async () => {
    await server.start();
    client = new ConsentClient(server.target, { timeoutMs: 5000 });
  });

  after(async () => {
    client?.close();
    await server.stop();
  });

  test("check, opt out, blocked send with ErrorInfo, opt in, send accepted", async () => {
    const address = phone();
    const first = await client.checkConsent(TENANT, "whatsapp", address, TOPIC);
    assert.equal(first.allowed, true);
    assert.equal(first.recipient.channel, "whatsapp");

    const out = await client.optOut(TENANT, "whatsapp", address, "", {
      source: "button",
      evidence: "wamid.TEST",
    });
    assert.equal(out.applied, true);
    assert.match(out.eventId, /^ev_[0-9a-f]{32}$/);

    const blockedCheck = await client.checkConsent(TENANT, "whatsapp", address, TOPIC);
    assert.equal(blockedCheck.allowed, false);
    assert.equal(blockedCheck.decidedBy, "all");
    assert.equal(blockedCheck.source, "button");
    assert.equal(blockedCheck.reason, "RECIPIENT_OPTED_OUT");

    const err = await rejection(
      client.sendIfAllowed(TENANT, "whatsapp", address, TOPIC, "20% off"),
    );
    assert.ok(err instanceof RecipientOptedOut);
    assert.ok(err instanceof SendBlocked && err instanceof FailedPrecondition);
    assert.equal(err.name, "RecipientOptedOut");
    assert.equal(err.code, Code.FAILED_PRECONDITION);
    assert.equal(err.reason, "RECIPIENT_OPTED_OUT");
    assert.equal(err.metadata.topic, TOPIC);
    assert.equal(err.metadata.scope, "ALL");
    assert.equal(err.metadata.source, "SOURCE_BUTTON");
    assert.equal(err.topic, TOPIC);
    assert.equal(err.scope, "all");
    assert.equal(err.source, "button");
    assert.equal(err.channel, "whatsapp");
    assert.ok(err.since instanceof Date);
    assert.equal(err.since.getTime(), blockedCheck.since?.getTime());
    assert.ok(err.detail("google.rpc.ErrorInfo"), "the ErrorInfo detail is kept");
    assert.equal(err.attempts, 1, "a blocked send is never retried");

    await client.optIn(TENANT, "whatsapp", address, "", { source: "keyword", evidence: "START" });
    const sent = await client.sendIfAllowed(TENANT, "whatsapp", address, TOPIC, "20% off");
    assert.ok(sent.messageId);
    assert.match(sent.idempotencyKey, /^idem_[0-9a-f]{32}$/);
    assert.equal(sent.duplicate, false);

    const status = await client.getMessageStatus(TENANT, sent.messageId);
    assert.equal(status.messageId, sent.messageId);
    // The server's inline worker may already have handed it to the default log provider.
    assert.ok(
      ["accepted", "delivered", "logged"].includes(String(status.status)),
      String(status.status),
    );

    const events = [];
    for await (const e of client.iterConsentEvents(TENANT, "whatsapp", address)) events.push(e);
    assert.deepEqual(
      events.map((e) => [e.action, e.source]),
      [
        ["opt_in", "keyword"],
        ["opt_out", "button"],
      ],
    );
  });

  test("InvalidArgument carries the BadRequest field violations", async () => {
    const err = await rejection(client.checkConsent(TENANT, "sms", "not a phone number", TOPIC));
    assert.ok(err instanceof InvalidArgument);
    assert.equal(err.code, Code.INVALID_ARGUMENT);
    assert.ok(err.fields.includes("recipient.address"), JSON.stringify(err.fieldViolations));
    const v = err.fieldViolations.find((f) => f.field === "recipient.address");
    assert.ok(v && v.description.length > 0);

    const bad = await rejection(
      client.sendIfAllowed(TENANT, "sms", "+12025550100", "Not A Topic!", "hi"),
    );
    assert.ok(bad instanceof InvalidArgument);
    assert.ok(bad.fields.includes("topic"), JSON.stringify(bad.fieldViolations));
    assert.equal(bad.attempts, 1, "INVALID_ARGUMENT is never retried");
  });

  test("a batch answers per item: decisions and typed errors in request order", async () => {
    const address = phone();
    await client.optOut(TENANT, "whatsapp", address, TOPIC);
    const items = await client.batchCheckConsent(
      TENANT,
      [["whatsapp", address], { channel: "email", address: "not-an-email" }, ["whatsapp", phone()]],
      TOPIC,
    );
    assert.deepEqual(
      items.map((i) => i.index),
      [0, 1, 2],
    );
    assert.equal(items[0].decision?.allowed, false);
    assert.equal(items[0].decision?.decidedBy, "topic");
    assert.ok(items[1].error instanceof InvalidArgument);
    assert.equal(items[2].decision?.allowed, true);
  });

  test("replays with the same event id or idempotency key are applied once", async () => {
    const address = phone();
    // The very same call twice: the second is the replay.
    const optOut = () =>
      client.optOut(TENANT, "whatsapp", address, TOPIC, {
        eventId: "ev_node_replay_1",
      });
    const a = await optOut();
    const b = await optOut();
    assert.equal(a.duplicate, false);
    assert.equal(b.duplicate, true);
    assert.equal(b.revision, a.revision);

    const other = phone();
    const key = "idem_node_" + other.slice(1);
    const send = () =>
      client.sendIfAllowed(TENANT, "sms", "+1202555" + other.slice(-4), TOPIC, "hi", {
        idempotencyKey: key,
      });
    const s1 = await send();
    const s2 = await send();
    assert.equal(s2.messageId, s1.messageId);
    assert.equal(s2.duplicate, true);
    assert.equal(s2.idempotencyKey, key);

    // The same key for a different message is refused, not silently merged.
    const reused = await rejection(
      client.sendIfAllowed(TENANT, "sms", "+1202555" + other.slice(-4), TOPIC, "different", {
        idempotencyKey: key,
      }),
    );
    assert.ok(reused instanceof AlreadyExists);
    assert.equal(reused.reason, "IDEMPOTENCY_KEY_REUSED");
  });

  test("NotFound names the reason", async () => {
    const err = await rejection(client.getMessageStatus(TENANT, "m_does_not_exist"));
    assert.ok(err instanceof NotFound);
    assert.equal(err.reason, "MESSAGE_NOT_FOUND");
  });

  test("local mistakes throw before anything is sent", async () => {
    await assert.rejects(
      client.checkConsent(TENANT, "pigeon" as never, "+12025550100", TOPIC),
      TypeError,
    );
    await assert.rejects(
      client.sendIfAllowed(TENANT, "sms", "+12025550100", TOPIC, {
        text: "a",
        template: { name: "t" },
      } as never),
      TypeError,
    );
    assert.throws(() => new ConsentClient(server.target, { timeoutMs: 0 }), TypeError);
    assert.throws(() => new ConsentClient(server.target, { tlsCert: "x" }), TypeError);
  });

  test("one overall deadline: a server that answers nothing fails within timeoutMs, retries included", async () => {
    const retries: RetryEvent[] = [];
    const slow = new ConsentClient(server.target, {
      timeoutMs: 400,
      retries: 3,
      backoff: { initialMs: 10, maximumMs: 10 },
      onRetry: (e) => retries.push(e),
    });
    try {
      // Connected first, so the deadline (not the connection) is what fails the call.
      await slow.checkConsent(TENANT, "sms", "+12025550100", TOPIC);
      server.pause();
      const started = Date.now();
      const err = await rejection(slow.checkConsent(TENANT, "sms", "+12025550100", TOPIC));
      const elapsed = Date.now() - started;
      assert.ok(err instanceof DeadlineExceeded, `${err}`);
      assert.ok(elapsed >= 350, `gave up early: ${elapsed} ms`);
      // A per-attempt deadline would take (1 + 3) x 400 ms here.
      assert.ok(elapsed < 1000, `took ${elapsed} ms for a 400 ms deadline`);
      assert.equal(retries.length, 0, "no retry once the deadline has passed");

      // A call's own timeoutMs overrides the client's.
      const t0 = Date.now();
      const err2 = await rejection(
        slow.checkConsent(TENANT, "sms", "+12025550100", TOPIC, { timeoutMs: 150 }),
      );
      assert.ok(err2 instanceof DeadlineExceeded);
      assert.ok(Date.now() - t0 < 380, `took ${Date.now() - t0} ms for a 150 ms deadline`);
    } finally {
      server.resume();
      slow.close();
    }
    // And the server is fine afterwards.
    assert.equal((await client.checkConsent(TENANT, "sms", "+12025550100", TOPIC)).allowed, true);
  });
});

describe("when the server is gone", () => {
  let target = "";

  before(async () => {
    const server = await new ServerProcess().start();
    target = server.target;
    await server.stop();
  });

  function gone(retries: RetryEvent[]): ConsentClient {
    return new ConsentClient(target, {
      timeoutMs: 5000,
      retries: 2,
      backoff: { initialMs: 5, maximumMs: 20 },
      onRetry: (e) => retries.push(e),
    });
  }

  test("reads are retried, then fail with Unavailable", async () => {
    const retries: RetryEvent[] = [];
    const c = gone(retries);
    try {
      const err = await rejection(c.checkConsent(TENANT, "sms", "+12025550100", TOPIC));
      assert.ok(err instanceof Unavailable, `${err}`);
      assert.equal(err.code, Code.UNAVAILABLE);
      assert.equal(err.attempts, 3);
      assert.deepEqual(
        retries.map((r) => [r.method, r.retry, r.error.code]),
        [
          ["CheckConsent", 1, Code.UNAVAILABLE],
          ["CheckConsent", 2, Code.UNAVAILABLE],
        ],
      );
    } finally {
      c.close();
    }
  });

  test("writes with an idempotency key are retried; without one, never", async () => {
    const retries: RetryEvent[] = [];
    const c = gone(retries);
    try {
      const out = await rejection(c.optOut(TENANT, "sms", "+12025550100", TOPIC));
      assert.ok(out instanceof Unavailable);
      assert.equal(out.attempts, 3, "an opt-out carries a generated event id: safe to retry");

      const keyed = await rejection(c.sendIfAllowed(TENANT, "sms", "+12025550100", TOPIC, "hi"));
      assert.equal(keyed.attempts, 3, "a send with a generated idempotency key is retried");

      retries.length = 0;
      const unkeyed = await rejection(
        c.sendIfAllowed(TENANT, "sms", "+12025550100", TOPIC, "hi", { autoIdempotencyKey: false }),
      );
      assert.ok(unkeyed instanceof Unavailable);
      assert.equal(unkeyed.attempts, 1, "a send without a key could queue twice: never retried");

      const minted = await rejection(c.createApiKey(TENANT, "reader"));
      assert.equal(minted.attempts, 1, "a retried CreateApiKey could mint a second key");
      assert.equal(retries.length, 0);
    } finally {
      c.close();
    }
  });
});

describe("with API keys required", () => {
  const operatorKey = "ck_0f562d292e7e1a07_RN8EWa6xDG_JQyosXO7dTNJX129hozzt9mU-ROV7reQ";
  const server = new ServerProcess({
    CONSENT_REQUIRE_AUTH: "1",
    CONSENT_BOOTSTRAP_ADMIN_KEY: operatorKey,
  });

  before(async () => {
    await server.start();
  });

  after(async () => {
    await server.stop();
  });

  test("no key is Unauthenticated; a reader key may check but not send", async () => {
    const anonymous = new ConsentClient(server.target);
    const operator = new ConsentClient(server.target, { apiKey: operatorKey });
    try {
      const err = await rejection(anonymous.checkConsent(TENANT, "sms", "+12025550100", TOPIC));
      assert.ok(err instanceof Unauthenticated, `${err}`);

      const made = await operator.createApiKey(TENANT, "reader", "node client test");
      assert.match(made.apiKey, /^ck_/);
      const listed = await operator.listApiKeys(TENANT);
      assert.ok(listed.some((k) => k.keyId === made.keyId));

      const reader = new ConsentClient(server.target, { apiKey: made.apiKey });
      try {
        assert.equal(
          (await reader.checkConsent(TENANT, "sms", "+12025550100", TOPIC)).allowed,
          true,
        );
        const denied = await rejection(
          reader.sendIfAllowed(TENANT, "sms", "+12025550100", TOPIC, "hi"),
        );
        assert.ok(denied instanceof PermissionDenied, `${denied}`);
        assert.equal(denied.reason, "ROLE_NOT_ALLOWED");

        const revoked = await operator.revokeApiKey(TENANT, made.keyId);
        assert.equal(revoked.alreadyRevoked, false);
        const after = await rejection(reader.checkConsent(TENANT, "sms", "+12025550100", TOPIC));
        assert.ok(after instanceof Unauthenticated);
      } finally {
        reader.close();
      }
    } finally {
      anonymous.close();
      operator.close();
    }
  });
});
