/**
 * The consent authority's TypeScript client: one method per RPC taking plain values,
 * one overall deadline per call (retries included), retries only where they are safe,
 * typed errors carrying the server's google.rpc details.
 */

import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

import {
  type ChannelCredentials,
  type ClientOptions,
  Metadata,
  type ServiceError,
  credentials as grpcCredentials,
  status as Code,
} from "@grpc/grpc-js";

import {
  type ApiKey,
  type CreateApiKeyResponse,
  type ForgetRecipientResponse,
  type RevokeApiKeyResponse,
  type TenantSettings,
  ConsentAdminServiceClient,
} from "./gen/consent/v1/admin";
import {
  type BatchCheckConsentResponse,
  type Message as MessagePb,
  type Recipient as RecipientPb,
  type SendIfAllowedResponse,
  ConsentServiceClient,
} from "./gen/consent/v1/consent";
import { type ConsentError, errorFromGrpc, errorFromStatus } from "./errors";
import {
  type ApiKeyRoleLike,
  type BatchItem,
  type ChangeResult,
  type ChannelLike,
  type ConsentEvent,
  type ConsentLinks,
  type Decision,
  type EventPage,
  type InboundResult,
  type MessageStatus,
  type SendResult,
  type SourceLike,
  apiKeyRoleToPb,
  changeFromPb,
  channelToPb,
  decisionFromPb,
  eventPageFromPb,
  inboundFromPb,
  linksFromPb,
  messageStatusFromPb,
  sendFromPb,
  sourceToPb,
} from "./types";

export const USER_AGENT = "consent-client-node/0.1.0";

/** Which failures a call may be retried on without changing its effect. */
export enum RetryMode {
  /** Not idempotent: a retry could apply it twice. */
  NEVER = "never",
  /** A write carrying its idempotency key (or setting a value): retried on UNAVAILABLE. */
  IDEMPOTENT_WRITE = "idempotent_write",
  /** Read-only: retried on UNAVAILABLE and DEADLINE_EXCEEDED. */
  READ = "read",
}

/** True when a failure with `code` may be retried in `mode`. */
export function retriesOn(mode: RetryMode, code: Code): boolean {
  if (mode === RetryMode.READ) return code === Code.UNAVAILABLE || code === Code.DEADLINE_EXCEEDED;
  if (mode === RetryMode.IDEMPOTENT_WRITE) return code === Code.UNAVAILABLE;
  return false;
}

/** Exponential backoff with jitter, honouring the server's RetryInfo hint. */
export interface Backoff {
  initialMs: number;
  maximumMs: number;
  multiplier: number;
  /** The longest server hint (RetryInfo) the client will wait for. */
  maxHintMs: number;
}

export const DEFAULT_BACKOFF: Backoff = {
  initialMs: 100,
  maximumMs: 2000,
  multiplier: 2,
  maxHintMs: 30000,
};

/** Milliseconds to wait before retry number `attempt + 1` (`attempt` from 0). */
export function backoffDelay(b: Backoff, attempt: number, hintMs?: number): number {
  if (hintMs !== undefined && hintMs > 0) {
    return Math.min(hintMs, b.maxHintMs) * (1 + Math.random() * 0.2);
  }
  const ceiling = Math.min(b.maximumMs, b.initialMs * b.multiplier ** attempt);
  return ceiling * (0.5 + Math.random() * 0.5);
}

/** What `onRetry` is told before the client waits and tries again. */
export interface RetryEvent {
  /** The RPC, e.g. "CheckConsent". */
  method: string;
  /** The number of the retry about to be made (1 = the first retry). */
  retry: number;
  /** The error of the attempt that failed. */
  error: ConsentError;
  /** How long the client waits before the retry. */
  delayMs: number;
}

/** PEM text or bytes, or a path to a PEM file. */
export type PemSource = string | Buffer;

export interface ConsentClientOptions {
  /** Sent as `authorization: Bearer <apiKey>` on every call. */
  apiKey?: string;
  /** The deadline of every call, retries included, in ms (default 5000). */
  timeoutMs?: number;
  /** How many times a call that failed transiently is retried when safe (default 3). */
  retries?: number;
  backoff?: Partial<Backoff>;
  /** Use TLS with the system's roots (implied by tlsCa / tlsCert). */
  tls?: boolean;
  /** The CA that signed the server's certificate. */
  tlsCa?: PemSource;
  /** The client certificate, for a server that requires one (mTLS). */
  tlsCert?: PemSource;
  /** The client certificate's private key (mTLS). */
  tlsKey?: PemSource;
  /** Channel credentials built by hand, instead of the tls* options. */
  credentials?: ChannelCredentials;
  /** Extra grpc-js channel options. */
  channelOptions?: Partial<ClientOptions>;
  /** Called before every retry (for logs and metrics). */
  onRetry?: (event: RetryEvent) => void;
}

/** Options every method takes. */
export interface CallOptions {
  /** This call's deadline in ms, retries included (default: the client's timeoutMs). */
  timeoutMs?: number;
}

export interface ChangeOptions extends CallOptions {
  source?: SourceLike;
  evidence?: string;
  /** When the customer acted (default: now, on the server). */
  occurredAt?: Date;
  /** Generated (`ev_<hex>`) when not given, so a retried call is applied once. */
  eventId?: string;
}

export interface Template {
  name: string;
  language?: string;
  parameters?: string[];
}

export interface Payload {
  contentType: string;
  data: Uint8Array;
}

/** A message: plain text, or exactly one of text, template and payload. */
export type MessageContent =
  string | { text: string } | { template: Template } | { payload: Payload };

export interface SendOptions extends CallOptions {
  /** Generated (`idem_<hex>`) unless given or autoIdempotencyKey is false. */
  idempotencyKey?: string;
  /** false: send without a key; such a send is never retried. Default true. */
  autoIdempotencyKey?: boolean;
  /** Do not deliver after this time. */
  notAfter?: Date;
  metadata?: Record<string, string>;
}

export interface InboundOptions extends CallOptions {
  /** The provider's id of the inbound message: a redelivery changes nothing. */
  providerMessageId: string;
  text?: string;
  buttonPayload?: string;
  receivedAt?: Date;
}

/** A recipient for batchCheckConsent. */
export type RecipientInput = [ChannelLike, string] | { channel: ChannelLike; address: string };

/** The result of createApiKey: the key itself is shown only this once. */
export interface CreatedApiKey {
  key: ApiKey | undefined;
  keyId: string;
  apiKey: string;
  raw: CreateApiKeyResponse;
}

/** A fresh event id for OptOut/OptIn, so that retries are idempotent. */
export function newEventId(): string {
  return "ev_" + randomUUID().replaceAll("-", "");
}

/** A fresh idempotency key for SendIfAllowed, so that retries never double-queue. */
export function newIdempotencyKey(): string {
  return "idem_" + randomUUID().replaceAll("-", "");
}

function pem(value: PemSource | undefined, name: string): Buffer | null {
  if (value === undefined) return null;
  if (Buffer.isBuffer(value)) return value;
  if (value.includes("-----BEGIN")) return Buffer.from(value);
  try {
    return readFileSync(value);
  } catch (e) {
    throw new TypeError(`${name}: cannot read ${JSON.stringify(value)} (${(e as Error).message})`);
  }
}

/** Channel credentials from the TLS options (plaintext when none is given). */
export function channelCredentials(o: ConsentClientOptions): ChannelCredentials {
  if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) {
    throw new TypeError("tlsCert and tlsKey go together (mTLS needs both)");
  }
  const wantsTls = Boolean(o.tls) || o.tlsCa !== undefined || o.tlsCert !== undefined;
  if (o.credentials) {
    if (wantsTls) throw new TypeError("pass either credentials or the tls* options, not both");
    return o.credentials;
  }
  if (!wantsTls) return grpcCredentials.createInsecure();
  return grpcCredentials.createSsl(
    pem(o.tlsCa, "tlsCa"),
    pem(o.tlsKey, "tlsKey"),
    pem(o.tlsCert, "tlsCert"),
  );
}

function positive(value: number, name: string): number {
  if (!Number.isFinite(value) || value <= 0) {
    throw new TypeError(`${name} must be a positive number of milliseconds`);
  }
  return value;
}

function recipientPb(channel: ChannelLike, address: string): RecipientPb {
  return { channel: channelToPb(channel), address };
}

function messagePb(content: MessageContent): MessagePb {
  if (typeof content === "string") return { text: content };
  const given = (["text", "template", "payload"] as const).filter(
    (k) => (content as Record<string, unknown>)[k] !== undefined,
  );
  if (given.length !== 1) throw new TypeError("give exactly one of text, template and payload");
  if ("text" in content) return { text: content.text };
  if ("template" in content) {
    const t = content.template;
    return {
      template: { name: t.name, language: t.language ?? "", parameters: t.parameters ?? [] },
    };
  }
  return {
    payload: { contentType: content.payload.contentType, data: Buffer.from(content.payload.data) },
  };
}

type Unary<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: { deadline: Date },
  callback: (error: ServiceError | null, response: Res) => void,
) => unknown;

interface Call<Req, Res, T> {
  /** The RPC's proto name, e.g. "CheckConsent". */
  method: string;
  admin?: boolean;
  request: Req;
  mode: RetryMode;
  parse: (response: Res) => T;
}

/**
 * A client for `consent.v1.ConsentService` (and the common `ConsentAdminService` calls).
 *
 *     const client = new ConsentClient("127.0.0.1:50051", { apiKey, timeoutMs: 5000 });
 *     const d = await client.checkConsent("acme", "whatsapp", "+919876543210", "marketing");
 *     client.close();
 */
export class ConsentClient {
  readonly target: string;
  readonly timeoutMs: number;
  readonly retries: number;
  private readonly backoff: Backoff;
  private readonly metadata: Metadata;
  private readonly onRetry: ((event: RetryEvent) => void) | undefined;
  private readonly stub: InstanceType<typeof ConsentServiceClient>;
  private readonly admin: InstanceType<typeof ConsentAdminServiceClient>;

  constructor(target: string, options: ConsentClientOptions = {}) {
    this.target = target;
    this.timeoutMs = positive(options.timeoutMs ?? 5000, "timeoutMs");
    const retries = options.retries ?? 3;
    if (!Number.isInteger(retries) || retries < 0) {
      throw new TypeError("retries must be an integer >= 0");
    }
    this.retries = retries;
    this.backoff = { ...DEFAULT_BACKOFF, ...(options.backoff ?? {}) };
    this.onRetry = options.onRetry;
    this.metadata = new Metadata();
    if (options.apiKey) this.metadata.set("authorization", `Bearer ${options.apiKey}`);
    const creds = channelCredentials(options);
    const channelOptions: Partial<ClientOptions> = {
      "grpc.primary_user_agent": USER_AGENT,
      // gRPC reconnects a channel whose server went away after 1 s at first, backing off
      // to 120 s, and fails every call meanwhile: retries 5-1000 ms apart would all fail
      // while a server restarting in a fraction of a second is already back. 100 ms
      // lines the first reconnects up with the retries' backoff; backing off to 10 s
      // keeps a long outage to one attempt per channel every ~10 s.
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 10_000,
      ...(options.channelOptions ?? {}),
    };
    this.stub = new ConsentServiceClient(target, creds, channelOptions);
    // One HTTP/2 connection for both services.
    this.admin = new ConsentAdminServiceClient(target, creds, {
      ...channelOptions,
      channelOverride: this.stub.getChannel(),
    });
  }

  /** Close the connection; calls made afterwards fail. */
  close(): void {
    this.stub.close();
  }

  private unary<Req, Res>(call: Call<Req, Res, unknown>, deadline: number): Promise<Res> {
    const stub = (call.admin ? this.admin : this.stub) as unknown as Record<string, unknown>;
    const name = call.method.charAt(0).toLowerCase() + call.method.slice(1);
    const fn = (stub[name] as Unary<Req, Res>).bind(stub);
    return new Promise<Res>((resolve, reject) => {
      fn(call.request, this.metadata.clone(), { deadline: new Date(deadline) }, (err, res) =>
        err ? reject(err) : resolve(res),
      );
    });
  }

  private async invoke<Req, Res, T>(call: Call<Req, Res, T>, opts: CallOptions = {}): Promise<T> {
    const timeout =
      opts.timeoutMs === undefined ? this.timeoutMs : positive(opts.timeoutMs, "timeoutMs");
    // One deadline for the whole call: each attempt gets what is left of it.
    const deadline = Date.now() + timeout;
    for (let attempt = 0; ; attempt++) {
      let response: Res;
      try {
        response = await this.unary(call, deadline);
      } catch (e) {
        // Only a failed call becomes a ConsentError; a bug of ours stays what it is.
        if (!(e instanceof Error) || typeof (e as Partial<ServiceError>).code !== "number") throw e;
        const err = errorFromGrpc(e as ServiceError);
        err.attempts = attempt + 1;
        if (attempt >= this.retries || !retriesOn(call.mode, err.code)) throw err;
        const delayMs = backoffDelay(this.backoff, attempt, err.retryDelayMs);
        // No retry that could not finish in time: the caller hears the real failure now.
        if (Date.now() + delayMs >= deadline) throw err;
        this.onRetry?.({ method: call.method, retry: attempt + 1, error: err, delayMs });
        await sleep(delayMs);
        continue;
      }
      return call.parse(response);
    }
  }

  /**
   * Decide whether `address` on `channel` may be messaged about `topic` now.
   * Read-only; retried on UNAVAILABLE and DEADLINE_EXCEEDED.
   */
  async checkConsent(
    tenantId: string,
    channel: ChannelLike,
    address: string,
    topic: string,
    opts?: CallOptions,
  ): Promise<Decision> {
    return this.invoke(
      {
        method: "CheckConsent",
        request: { tenantId, recipient: recipientPb(channel, address), topic },
        mode: RetryMode.READ,
        parse: decisionFromPb,
      },
      opts,
    );
  }

  /**
   * Decide for up to 10,000 recipients at once, about one topic. Results come in
   * request order; an address that cannot be normalised is an item whose `error` is
   * set (usually InvalidArgument). Read-only.
   */
  async batchCheckConsent(
    tenantId: string,
    recipients: Iterable<RecipientInput>,
    topic: string,
    opts?: CallOptions,
  ): Promise<BatchItem[]> {
    const list = [...recipients].map((r) =>
      Array.isArray(r) ? recipientPb(r[0], r[1]) : recipientPb(r.channel, r.address),
    );
    return this.invoke(
      {
        method: "BatchCheckConsent",
        request: { tenantId, topic, recipients: list },
        mode: RetryMode.READ,
        parse: (res: BatchCheckConsentResponse) =>
          res.results.map((r, index): BatchItem =>
            r.decision
              ? { index, decision: decisionFromPb(r.decision), error: undefined }
              : {
                  index,
                  decision: undefined,
                  error: errorFromStatus(
                    r.error ?? { code: Code.UNKNOWN, message: "no result", details: [] },
                  ),
                },
          ),
      },
      opts,
    );
  }

  private async change(
    method: "OptOut" | "OptIn",
    tenantId: string,
    channel: ChannelLike,
    address: string,
    topic: string,
    opts: ChangeOptions,
  ): Promise<ChangeResult> {
    const eventId = opts.eventId ?? newEventId();
    return this.invoke(
      {
        method,
        request: {
          tenantId,
          recipient: recipientPb(channel, address),
          topic,
          source: sourceToPb(opts.source ?? "api"),
          evidence: opts.evidence ?? "",
          occurredAt: opts.occurredAt,
          eventId,
        },
        mode: eventId ? RetryMode.IDEMPOTENT_WRITE : RetryMode.NEVER,
        parse: changeFromPb,
      },
      opts,
    );
  }

  /**
   * Record that the recipient withdrew consent for `topic` ("" = all topics). Without
   * `eventId` the client generates one, so a retried call is applied once; a replay
   * answers `duplicate: true`.
   */
  async optOut(
    tenantId: string,
    channel: ChannelLike,
    address: string,
    topic = "",
    opts: ChangeOptions = {},
  ): Promise<ChangeResult> {
    return this.change("OptOut", tenantId, channel, address, topic, opts);
  }

  /** Record that the recipient gave consent for `topic` ("" = all topics); as optOut. */
  async optIn(
    tenantId: string,
    channel: ChannelLike,
    address: string,
    topic = "",
    opts: ChangeOptions = {},
  ): Promise<ChangeResult> {
    return this.change("OptIn", tenantId, channel, address, topic, opts);
  }

  /**
   * Hand a message over: accepted into the outbox only if consent allows it.
   * Rejects with RecipientOptedOut or OptInRequired when it does not. Without
   * `idempotencyKey` the client generates one (returned in `idempotencyKey`), so a
   * retried send never queues twice; with `autoIdempotencyKey: false` the send carries
   * no key and is never retried.
   */
  async sendIfAllowed(
    tenantId: string,
    channel: ChannelLike,
    address: string,
    topic: string,
    content: MessageContent,
    opts: SendOptions = {},
  ): Promise<SendResult> {
    let key = opts.idempotencyKey;
    if (key === undefined && opts.autoIdempotencyKey !== false) key = newIdempotencyKey();
    const used = key ?? "";
    return this.invoke(
      {
        method: "SendIfAllowed",
        request: {
          tenantId,
          recipient: recipientPb(channel, address),
          topic,
          message: messagePb(content),
          idempotencyKey: used,
          notAfter: opts.notAfter,
          metadata: { ...(opts.metadata ?? {}) },
        },
        mode: used ? RetryMode.IDEMPOTENT_WRITE : RetryMode.NEVER,
        parse: (res: SendIfAllowedResponse) => sendFromPb(res, used),
      },
      opts,
    );
  }

  /**
   * Feed an inbound reply or button tap (STOP, START, HELP...) to the authority.
   * Idempotent by `providerMessageId`, so retried on UNAVAILABLE.
   */
  async handleInboundMessage(
    tenantId: string,
    channel: ChannelLike,
    address: string,
    opts: InboundOptions,
  ): Promise<InboundResult> {
    return this.invoke(
      {
        method: "HandleInboundMessage",
        request: {
          tenantId,
          recipient: recipientPb(channel, address),
          text: opts.text ?? "",
          buttonPayload: opts.buttonPayload ?? "",
          providerMessageId: opts.providerMessageId,
          receivedAt: opts.receivedAt,
        },
        mode: opts.providerMessageId ? RetryMode.IDEMPOTENT_WRITE : RetryMode.NEVER,
        parse: inboundFromPb,
      },
      opts,
    );
  }

  /** One page of the recipient's consent history, newest first. Read-only. */
  async listConsentEvents(
    tenantId: string,
    channel: ChannelLike,
    address: string,
    page: { pageSize?: number; pageToken?: string } = {},
    opts?: CallOptions,
  ): Promise<EventPage> {
    return this.invoke(
      {
        method: "ListConsentEvents",
        request: {
          tenantId,
          recipient: recipientPb(channel, address),
          pageSize: page.pageSize ?? 0,
          pageToken: page.pageToken ?? "",
        },
        mode: RetryMode.READ,
        parse: eventPageFromPb,
      },
      opts,
    );
  }

  /** Every consent event of the recipient, newest first, following page tokens. */
  async *iterConsentEvents(
    tenantId: string,
    channel: ChannelLike,
    address: string,
    pageSize = 0,
    opts?: CallOptions,
  ): AsyncGenerator<ConsentEvent> {
    let pageToken = "";
    do {
      const page = await this.listConsentEvents(
        tenantId,
        channel,
        address,
        { pageSize, pageToken },
        opts,
      );
      yield* page.events;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** The delivery status of a message accepted by sendIfAllowed; NotFound if none. */
  async getMessageStatus(
    tenantId: string,
    messageId: string,
    opts?: CallOptions,
  ): Promise<MessageStatus> {
    return this.invoke(
      {
        method: "GetMessageStatus",
        request: { tenantId, messageId },
        mode: RetryMode.READ,
        parse: messageStatusFromPb,
      },
      opts,
    );
  }

  /**
   * Signed opt-out and re-subscribe links (and the List-Unsubscribe headers) for the
   * recipient and topic. Mints tokens, so retried like a read. `shortLinks: true` also
   * returns `<public URL>/l/<code>` forms for SMS (a retry stores fresh codes; harmless).
   */
  async createConsentLink(
    tenantId: string,
    channel: ChannelLike,
    address: string,
    topic = "",
    opts: CallOptions & { ttlSeconds?: number; shortLinks?: boolean } = {},
  ): Promise<ConsentLinks> {
    return this.invoke(
      {
        method: "CreateConsentLink",
        request: {
          tenantId,
          recipient: recipientPb(channel, address),
          topic,
          ttlSeconds: opts.ttlSeconds ?? 0,
          shortLinks: opts.shortLinks ?? false,
        },
        mode: RetryMode.READ,
        parse: linksFromPb,
      },
      opts,
    );
  }

  // -- ConsentAdminService ----------------------------------------------------------

  /** The tenant's effective settings (defaults filled in), as the proto message. */
  async getTenantSettings(tenantId: string, opts?: CallOptions): Promise<TenantSettings> {
    return this.invoke(
      {
        method: "GetTenantSettings",
        admin: true,
        request: { tenantId },
        mode: RetryMode.READ,
        parse: (r: TenantSettings) => r,
      },
      opts,
    );
  }

  /**
   * Create an API key ("*" = an operator key). The key is in `apiKey`, shown only
   * now. NEVER retried: a retry after a lost answer would mint a second key.
   */
  async createApiKey(
    tenantId: string,
    role: ApiKeyRoleLike,
    description = "",
    opts: CallOptions & { rateLimitPerSecond?: number } = {},
  ): Promise<CreatedApiKey> {
    return this.invoke(
      {
        method: "CreateApiKey",
        admin: true,
        request: {
          tenantId,
          role: apiKeyRoleToPb(role),
          description,
          rateLimitPerSecond: opts.rateLimitPerSecond ?? 0,
        },
        mode: RetryMode.NEVER,
        parse: (r: CreateApiKeyResponse): CreatedApiKey => ({
          key: r.key,
          keyId: r.key?.keyId ?? "",
          apiKey: r.apiKey,
          raw: r,
        }),
      },
      opts,
    );
  }

  /** The tenant's keys, oldest first; never secrets. Read-only. */
  async listApiKeys(
    tenantId: string,
    opts: CallOptions & { includeRevoked?: boolean } = {},
  ): Promise<ApiKey[]> {
    return this.invoke(
      {
        method: "ListApiKeys",
        admin: true,
        request: { tenantId, includeRevoked: opts.includeRevoked ?? false },
        mode: RetryMode.READ,
        parse: (r: { keys: ApiKey[] }) => r.keys,
      },
      opts,
    );
  }

  /** Revoke a key by its id. Idempotent (`alreadyRevoked`), so retried on UNAVAILABLE. */
  async revokeApiKey(
    tenantId: string,
    keyId: string,
    opts?: CallOptions,
  ): Promise<RevokeApiKeyResponse> {
    return this.invoke(
      {
        method: "RevokeApiKey",
        admin: true,
        request: { tenantId, keyId },
        mode: RetryMode.IDEMPOTENT_WRITE,
        parse: (r: RevokeApiKeyResponse) => r,
      },
      opts,
    );
  }

  /**
   * Erase what the authority holds about the recipient; one who had opted out stays
   * suppressed. A repeated erasure finds nothing more, so retried on UNAVAILABLE.
   */
  async forgetRecipient(
    tenantId: string,
    channel: ChannelLike,
    address: string,
    opts?: CallOptions,
  ): Promise<ForgetRecipientResponse> {
    return this.invoke(
      {
        method: "ForgetRecipient",
        admin: true,
        request: { tenantId, recipient: recipientPb(channel, address) },
        mode: RetryMode.IDEMPOTENT_WRITE,
        parse: (r: ForgetRecipientResponse) => r,
      },
      opts,
    );
  }
}
