/**
 * Typed errors built from gRPC statuses and their google.rpc rich details.
 *
 *     ConsentError                  any failed call; .code .message .reason .metadata .details
 *     ├── InvalidArgument           INVALID_ARGUMENT; .fieldViolations [{field, description}]
 *     ├── FailedPrecondition        FAILED_PRECONDITION (reason not one of the below)
 *     │   └── SendBlocked           the send was not accepted; .topic .scope .since .source .channel
 *     │       ├── RecipientOptedOut reason RECIPIENT_OPTED_OUT: the recipient opted out
 *     │       └── OptInRequired     reason OPT_IN_REQUIRED: REQUIRE_OPT_IN and no opt-in
 *     ├── AlreadyExists             ALREADY_EXISTS (EVENT_ID_REUSED, IDEMPOTENCY_KEY_REUSED)
 *     ├── NotFound                  NOT_FOUND (e.g. MESSAGE_NOT_FOUND)
 *     ├── Unauthenticated           UNAUTHENTICATED: missing or unknown API key
 *     ├── PermissionDenied          PERMISSION_DENIED: the key's role may not do this
 *     ├── ResourceExhausted         RESOURCE_EXHAUSTED; .retryDelayMs
 *     ├── Unavailable               UNAVAILABLE (server or its store unreachable); .retryDelayMs
 *     ├── DeadlineExceeded          DEADLINE_EXCEEDED: the call's deadline passed
 *     ├── Unimplemented             UNIMPLEMENTED: the server does not serve this RPC (yet)
 *     ├── InternalError             INTERNAL / DATA_LOSS: a server bug; nothing was sent
 *     └── OtherError                any other status code (CANCELLED, ABORTED, UNKNOWN...)
 *
 * The same tree and names as the Python client's exceptions (`consent_client`).
 */

import { Metadata, status as Code } from "@grpc/grpc-js";
import type { ServiceError } from "@grpc/grpc-js";

import { Any } from "./gen/google/protobuf/any";
import {
  BadRequest,
  DebugInfo,
  ErrorInfo,
  Help,
  LocalizedMessage,
  PreconditionFailure,
  QuotaFailure,
  ResourceInfo,
  RetryInfo,
} from "./gen/google/rpc/error_details";
import { Status } from "./gen/google/rpc/status";
import { type ChannelName, type ScopeName, type SourceName, enumName } from "./types";
import { Channel, Scope, Source } from "./gen/consent/v1/consent";

export { Code };

/** The trailer in which gRPC servers send the `google.rpc.Status` with its details. */
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";

/** One unpacked rich detail: its type name and the decoded message. */
export type Detail =
  | { type: "google.rpc.ErrorInfo"; value: ErrorInfo }
  | { type: "google.rpc.BadRequest"; value: BadRequest }
  | { type: "google.rpc.RetryInfo"; value: RetryInfo }
  | { type: "google.rpc.DebugInfo"; value: DebugInfo }
  | { type: "google.rpc.QuotaFailure"; value: QuotaFailure }
  | { type: "google.rpc.PreconditionFailure"; value: PreconditionFailure }
  | { type: "google.rpc.ResourceInfo"; value: ResourceInfo }
  | { type: "google.rpc.Help"; value: Help }
  | { type: "google.rpc.LocalizedMessage"; value: LocalizedMessage }
  | { type: string; value: Any };

const DECODERS: Record<string, { decode(bytes: Uint8Array): unknown }> = {
  "google.rpc.ErrorInfo": ErrorInfo,
  "google.rpc.BadRequest": BadRequest,
  "google.rpc.RetryInfo": RetryInfo,
  "google.rpc.DebugInfo": DebugInfo,
  "google.rpc.QuotaFailure": QuotaFailure,
  "google.rpc.PreconditionFailure": PreconditionFailure,
  "google.rpc.ResourceInfo": ResourceInfo,
  "google.rpc.Help": Help,
  "google.rpc.LocalizedMessage": LocalizedMessage,
};

/** A field the server named in a `google.rpc.BadRequest`. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** Options of a ConsentError, as `errorFromStatus` fills them. */
export interface ConsentErrorInit {
  reason?: string;
  metadata?: Record<string, string>;
  details?: Detail[];
  status?: Status;
  cause?: unknown;
  attempts?: number;
}

/**
 * A call to the consent authority failed.
 *
 * `reason` and `metadata` come from the `google.rpc.ErrorInfo` detail (empty when the
 * server sent none); `details` holds every unpacked detail in the order the server
 * sent them; `cause` is the original grpc-js error.
 */
export class ConsentError extends Error {
  /** The gRPC status code (`Code.INVALID_ARGUMENT`, ...). */
  readonly code: Code;
  /** `ErrorInfo.reason`, e.g. "RECIPIENT_OPTED_OUT"; "" if none. */
  readonly reason: string;
  /** `ErrorInfo.metadata`; empty if none. */
  readonly metadata: Readonly<Record<string, string>>;
  /** Every rich detail of the status, unpacked. */
  readonly details: readonly Detail[];
  /** Milliseconds from `RetryInfo.retry_delay`; undefined if the server sent none. */
  readonly retryDelayMs: number | undefined;
  /** The `google.rpc.Status` the error was built from, if the server sent one. */
  readonly status: Status | undefined;
  /** How many attempts the client made before giving up (1 = no retry). */
  attempts: number;

  constructor(code: Code, message: string, init: ConsentErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.code = code;
    this.reason = init.reason ?? "";
    this.metadata = { ...(init.metadata ?? {}) };
    this.details = [...(init.details ?? [])];
    this.status = init.status;
    this.attempts = init.attempts ?? 1;
    let delay: number | undefined;
    for (const d of this.details) {
      if (d.type === "google.rpc.RetryInfo") {
        const rd = (d.value as RetryInfo).retryDelay;
        if (rd) delay = rd.seconds * 1000 + Math.floor(rd.nanos / 1e6);
      }
    }
    this.retryDelayMs = delay;
  }

  /** The name of the status code, e.g. "FAILED_PRECONDITION". */
  get codeName(): string {
    return Code[this.code] ?? "UNKNOWN";
  }

  override toString(): string {
    const reason = this.reason ? ` [${this.reason}]` : "";
    return `${this.name}: ${this.codeName}${reason}: ${this.message}`;
  }

  /** The first unpacked detail of the given type name (e.g. "google.rpc.ErrorInfo"). */
  detail<T = unknown>(type: string): T | undefined {
    return this.details.find((d) => d.type === type)?.value as T | undefined;
  }
}

/** INVALID_ARGUMENT: the request broke a documented limit; nothing was written. */
export class InvalidArgument extends ConsentError {
  /** `{field, description}` for each field the server named in `BadRequest`. */
  get fieldViolations(): FieldViolation[] {
    const out: FieldViolation[] = [];
    for (const d of this.details) {
      if (d.type === "google.rpc.BadRequest") {
        for (const v of (d.value as BadRequest).fieldViolations) {
          out.push({ field: v.field, description: v.description });
        }
      }
    }
    return out;
  }

  /** The names of the bad fields, e.g. ["recipient.address"]. */
  get fields(): string[] {
    return this.fieldViolations.map((v) => v.field);
  }
}

/** FAILED_PRECONDITION: the system is not in a state where the call can succeed. */
export class FailedPrecondition extends ConsentError {}

/** The message was not accepted because consent does not allow it (ErrorInfo metadata). */
export class SendBlocked extends FailedPrecondition {
  /** The topic the send was about. */
  get topic(): string {
    return this.metadata.topic ?? "";
  }

  /** Which record blocked the send: "all", "topic" or "default_policy". */
  get scope(): ScopeName | undefined {
    return enumName(Scope, this.metadata.scope, "SCOPE_") as ScopeName | undefined;
  }

  /** When the recipient opted out; undefined when not sent. */
  get since(): Date | undefined {
    const raw = this.metadata.since;
    if (!raw) return undefined;
    const d = new Date(raw);
    return Number.isNaN(d.getTime()) ? undefined : d;
  }

  /** Where the blocking opt-out came from ("button", "keyword", ...). */
  get source(): SourceName | undefined {
    return enumName(Source, this.metadata.source, "SOURCE_") as SourceName | undefined;
  }

  /** The recipient's channel. */
  get channel(): ChannelName | undefined {
    return enumName(Channel, this.metadata.channel, "CHANNEL_") as ChannelName | undefined;
  }
}

/** The recipient opted out of the topic or of all topics; only they can opt back in. */
export class RecipientOptedOut extends SendBlocked {}

/** The topic requires an explicit opt-in and the recipient has none. */
export class OptInRequired extends SendBlocked {}

/** An event id or idempotency key was reused for a different request; nothing was written. */
export class AlreadyExists extends ConsentError {}

/** NOT_FOUND: e.g. no message with that id, or no such tenant. */
export class NotFound extends ConsentError {}

/** UNAUTHENTICATED: the API key is missing, unknown or revoked. */
export class Unauthenticated extends ConsentError {}

/** PERMISSION_DENIED: the API key may not do this (role or tenant). */
export class PermissionDenied extends ConsentError {}

/** RESOURCE_EXHAUSTED: a rate limit or size limit; see `retryDelayMs`. */
export class ResourceExhausted extends ConsentError {}

/**
 * UNAVAILABLE: the server or its store cannot be reached; nothing was allowed or
 * accepted. Thrown after the client's retries ran out. A change sent to a slow store
 * may still be recorded: retry with the same eventId / idempotencyKey.
 */
export class Unavailable extends ConsentError {}

/**
 * DEADLINE_EXCEEDED: the call did not finish within its deadline. For writes the
 * outcome is unknown; repeat them with the same eventId / idempotencyKey.
 */
export class DeadlineExceeded extends ConsentError {}

/** UNIMPLEMENTED: the server does not serve this RPC (yet). */
export class Unimplemented extends ConsentError {}

/** INTERNAL or DATA_LOSS: a fault inside the server; the message names an incident id. */
export class InternalError extends ConsentError {}

/** Any status code without a class of its own (CANCELLED, ABORTED, UNKNOWN...). */
export class OtherError extends ConsentError {}

type ErrorClass = new (code: Code, message: string, init?: ConsentErrorInit) => ConsentError;

const BY_CODE: Partial<Record<Code, ErrorClass>> = {
  [Code.INVALID_ARGUMENT]: InvalidArgument,
  [Code.FAILED_PRECONDITION]: FailedPrecondition,
  [Code.NOT_FOUND]: NotFound,
  [Code.ALREADY_EXISTS]: AlreadyExists,
  [Code.UNAUTHENTICATED]: Unauthenticated,
  [Code.PERMISSION_DENIED]: PermissionDenied,
  [Code.RESOURCE_EXHAUSTED]: ResourceExhausted,
  [Code.UNAVAILABLE]: Unavailable,
  [Code.DEADLINE_EXCEEDED]: DeadlineExceeded,
  [Code.UNIMPLEMENTED]: Unimplemented,
  [Code.INTERNAL]: InternalError,
  [Code.DATA_LOSS]: InternalError,
};

const BY_REASON: Record<string, ErrorClass> = {
  RECIPIENT_OPTED_OUT: RecipientOptedOut,
  OPT_IN_REQUIRED: OptInRequired,
};

function unpack(details: Any[]): Detail[] {
  return details.map((any) => {
    const type = any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1);
    const decoder = DECODERS[type];
    if (decoder) {
      try {
        return { type, value: decoder.decode(any.value) } as Detail;
      } catch {
        // An undecodable detail is kept packed rather than failing the whole error.
      }
    }
    return { type, value: any };
  });
}

/** The typed error for a `google.rpc.Status` (e.g. a batch item's error). */
export function errorFromStatus(
  status: Status,
  opts: { code?: Code; message?: string; cause?: unknown } = {},
): ConsentError {
  const code: Code = opts.code ?? (status.code in Code ? status.code : Code.UNKNOWN);
  const details = unpack(status.details);
  let reason = "";
  let metadata: Record<string, string> = {};
  const info = details.find((d) => d.type === "google.rpc.ErrorInfo");
  if (info) {
    reason = (info.value as ErrorInfo).reason;
    metadata = { ...(info.value as ErrorInfo).metadata };
  }
  let cls = BY_CODE[code] ?? OtherError;
  if (code === Code.FAILED_PRECONDITION) cls = BY_REASON[reason] ?? cls;
  return new cls(code, opts.message ?? status.message, {
    reason,
    metadata,
    details,
    status,
    cause: opts.cause,
  });
}

/** The typed error for a failed grpc-js call, decoding `grpc-status-details-bin`. */
export function errorFromGrpc(err: Partial<ServiceError>): ConsentError {
  const code = typeof err.code === "number" ? (err.code as Code) : Code.UNKNOWN;
  const message = err.details || Code[code] || "UNKNOWN";
  let status: Status = { code, message, details: [] };
  const md = err.metadata instanceof Metadata ? err.metadata : undefined;
  const raw = md?.get(STATUS_DETAILS_KEY)[0];
  if (raw instanceof Uint8Array) {
    try {
      const parsed = Status.decode(raw);
      // Trust the trailer only when it describes this very status.
      if (parsed.code === code) status = parsed;
    } catch {
      // A malformed trailer leaves the plain status.
    }
  }
  return errorFromStatus(status, { code, message, cause: err });
}
