/** Error decoding and backoff, without a server: what the server may send but rarely does. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { Metadata } from "@grpc/grpc-js";

import {
  Code,
  DEFAULT_BACKOFF,
  InvalidArgument,
  OptInRequired,
  OtherError,
  RetryMode,
  STATUS_DETAILS_KEY,
  Unavailable,
  backoffDelay,
  errorFromGrpc,
  retriesOn,
} from "../src";
import { Any } from "../src/gen/google/protobuf/any";
import { BadRequest, ErrorInfo, RetryInfo } from "../src/gen/google/rpc/error_details";
import { Status } from "../src/gen/google/rpc/status";

function packed(type: string, value: Uint8Array): Any {
  return { typeUrl: `type.googleapis.com/${type}`, value: Buffer.from(value) };
}

function grpcError(
  code: Code,
  message: string,
  status?: Status,
): Parameters<typeof errorFromGrpc>[0] {
  const metadata = new Metadata();
  if (status) metadata.set(STATUS_DETAILS_KEY, Buffer.from(Status.encode(status).finish()));
  return { code, details: message, metadata };
}

test("ErrorInfo, BadRequest and RetryInfo are decoded from grpc-status-details-bin", () => {
  const status: Status = {
    code: Code.UNAVAILABLE,
    message: "store unavailable",
    details: [
      packed(
        "google.rpc.ErrorInfo",
        ErrorInfo.encode({
          reason: "STORE_UNAVAILABLE",
          domain: "consent",
          metadata: { a: "b" },
        }).finish(),
      ),
      packed(
        "google.rpc.RetryInfo",
        RetryInfo.encode({ retryDelay: { seconds: 1, nanos: 500_000_000 } }).finish(),
      ),
      packed("example.Unknown", new Uint8Array([1, 2])),
    ],
  };
  const err = errorFromGrpc(grpcError(Code.UNAVAILABLE, "store unavailable", status));
  assert.ok(err instanceof Unavailable);
  assert.equal(err.reason, "STORE_UNAVAILABLE");
  assert.deepEqual(err.metadata, { a: "b" });
  assert.equal(err.retryDelayMs, 1500);
  assert.deepEqual(
    err.details.map((d) => d.type),
    ["google.rpc.ErrorInfo", "google.rpc.RetryInfo", "example.Unknown"],
  );
  assert.ok(err.cause, "the grpc-js error is kept as the cause");

  const bad = errorFromGrpc(
    grpcError(Code.INVALID_ARGUMENT, "bad", {
      code: Code.INVALID_ARGUMENT,
      message: "bad",
      details: [
        packed(
          "google.rpc.BadRequest",
          BadRequest.encode({
            fieldViolations: [
              { field: "topic", description: "too long", reason: "", localizedMessage: undefined },
            ],
          }).finish(),
        ),
      ],
    }),
  );
  assert.ok(bad instanceof InvalidArgument);
  assert.deepEqual(bad.fieldViolations, [{ field: "topic", description: "too long" }]);
});

test("the reason picks the SendBlocked subclass; a trailer for another code is ignored", () => {
  const info = ErrorInfo.encode({
    reason: "OPT_IN_REQUIRED",
    domain: "",
    metadata: { topic: "news", scope: "DEFAULT_POLICY" },
  }).finish();
  const status: Status = {
    code: Code.FAILED_PRECONDITION,
    message: "x",
    details: [packed("google.rpc.ErrorInfo", info)],
  };
  const err = errorFromGrpc(grpcError(Code.FAILED_PRECONDITION, "x", status));
  assert.ok(err instanceof OptInRequired);
  assert.equal(err.scope, "default_policy");
  assert.equal(err.since, undefined);

  const mismatched = errorFromGrpc(grpcError(Code.ABORTED, "aborted", status));
  assert.ok(mismatched instanceof OtherError);
  assert.equal(mismatched.reason, "");
  assert.equal(mismatched.codeName, "ABORTED");
});

test("retry modes and backoff", () => {
  assert.equal(retriesOn(RetryMode.READ, Code.DEADLINE_EXCEEDED), true);
  assert.equal(retriesOn(RetryMode.IDEMPOTENT_WRITE, Code.DEADLINE_EXCEEDED), false);
  assert.equal(retriesOn(RetryMode.IDEMPOTENT_WRITE, Code.UNAVAILABLE), true);
  assert.equal(retriesOn(RetryMode.NEVER, Code.UNAVAILABLE), false);
  assert.equal(retriesOn(RetryMode.READ, Code.FAILED_PRECONDITION), false);
  for (let attempt = 0; attempt < 6; attempt++) {
    const d = backoffDelay(DEFAULT_BACKOFF, attempt);
    const ceiling = Math.min(2000, 100 * 2 ** attempt);
    assert.ok(d >= ceiling / 2 && d <= ceiling, `${attempt}: ${d}`);
  }
  const hinted = backoffDelay(DEFAULT_BACKOFF, 0, 1000);
  assert.ok(hinted >= 1000 && hinted <= 1200, `${hinted}`);
  assert.ok(backoffDelay(DEFAULT_BACKOFF, 0, 600_000) <= 36_000, "a hint is capped");
});
