/**
 * Plain values in and out: friendly lower-case names for the proto enums, and the
 * result shapes the client returns (each keeps the response message in `raw`).
 */

import {
  Channel,
  ConsentAction,
  ConsentStatus,
  InboundAction,
  MessageStatus as MessageStatusPb,
  Scope,
  Source,
} from "./gen/consent/v1/consent";
import type {
  CheckConsentResponse,
  ConsentEvent as ConsentEventPb,
  CreateConsentLinkResponse,
  GetMessageStatusResponse,
  HandleInboundMessageResponse,
  ListConsentEventsResponse,
  OptInResponse,
  OptOutResponse,
  Recipient as RecipientPb,
  SendIfAllowedResponse,
} from "./gen/consent/v1/consent";
import { ApiKeyRole } from "./gen/consent/v1/admin";
import type { ConsentError } from "./errors";

export type ChannelName = "whatsapp" | "sms" | "email" | "rcs" | "voice";
export type SourceName =
  "api" | "keyword" | "button" | "link" | "admin" | "import" | "provider" | "erasure";
export type ScopeName = "topic" | "all" | "default_policy";
export type ConsentStatusName = "opted_in" | "opted_out" | "no_record";
export type ConsentActionName = "opt_out" | "opt_in";
export type InboundActionName = "none" | "opted_out" | "opted_in" | "help";
export type MessageStateName = "accepted" | "delivered" | "cancelled" | "failed" | "expired";
export type ApiKeyRoleName = "admin" | "writer" | "sender" | "reader";

/** A channel as a friendly name ("whatsapp") or the proto enum value. */
export type ChannelLike = ChannelName | Channel;
/** A source as a friendly name ("button") or the proto enum value. */
export type SourceLike = SourceName | Source;
/** An API key role as a friendly name ("reader") or the proto enum value. */
export type ApiKeyRoleLike = ApiKeyRoleName | ApiKeyRole;

type EnumObject = Record<string, string | number>;

/**
 * The friendly name of an enum value: 2 or "SCOPE_ALL" or "all" -> "all"; undefined
 * for UNSPECIFIED, unknown or empty values.
 */
export function enumName(
  e: EnumObject,
  value: number | string | undefined,
  prefix: string,
): string | undefined {
  if (value === undefined || value === "") return undefined;
  let key: string | undefined;
  if (typeof value === "number") {
    const name = e[value];
    key = typeof name === "string" ? name : undefined;
  } else {
    key = value.trim().toUpperCase();
    if (!key.startsWith(prefix)) key = prefix + key;
    if (typeof e[key] !== "number") key = undefined;
  }
  if (key === undefined || !key.startsWith(prefix)) return undefined;
  const short = key.slice(prefix.length).toLowerCase();
  return short === "unspecified" ? undefined : short;
}

function toEnum(e: EnumObject, value: string | number, prefix: string, what: string): number {
  if (typeof value === "number") {
    if (typeof e[value] === "string") return value;
  } else {
    const n = e[prefix + value.trim().toUpperCase()];
    if (typeof n === "number" && n > 0) return n;
  }
  // Local validation error: a TypeError before anything is sent, like Python's ValueError.
  throw new TypeError(`unknown ${what} ${JSON.stringify(value)}`);
}

/** The proto Channel for a name or value; throws TypeError for an unknown one. */
export function channelToPb(value: ChannelLike): Channel {
  return toEnum(Channel, value, "CHANNEL_", "channel") as Channel;
}

/** The proto Source for a name or value; throws TypeError for an unknown one. */
export function sourceToPb(value: SourceLike): Source {
  return toEnum(Source, value, "SOURCE_", "source") as Source;
}

/** The proto ApiKeyRole for a name or value; throws TypeError for an unknown one. */
export function apiKeyRoleToPb(value: ApiKeyRoleLike): ApiKeyRole {
  return toEnum(ApiKeyRole, value, "API_KEY_ROLE_", "role") as ApiKeyRole;
}

/** A recipient: the channel and the address as the server normalised it. */
export interface Recipient {
  channel: ChannelName | undefined;
  address: string;
}

function recipient(msg: RecipientPb | undefined): Recipient {
  return {
    channel: enumName(Channel, msg?.channel, "CHANNEL_") as ChannelName | undefined,
    address: msg?.address ?? "",
  };
}

/** The answer to CheckConsent. */
export interface Decision {
  allowed: boolean;
  status: ConsentStatusName | undefined;
  decidedBy: ScopeName | undefined;
  /** "" when allowed, else "RECIPIENT_OPTED_OUT" or "OPT_IN_REQUIRED". */
  reason: string;
  /** When the deciding record was set; undefined for the default policy. */
  since: Date | undefined;
  source: SourceName | undefined;
  revision: number;
  recipient: Recipient;
  topic: string;
  raw: CheckConsentResponse;
}

export function decisionFromPb(msg: CheckConsentResponse): Decision {
  return {
    allowed: msg.allowed,
    status: enumName(ConsentStatus, msg.status, "CONSENT_STATUS_") as ConsentStatusName,
    decidedBy: enumName(Scope, msg.decidedBy, "SCOPE_") as ScopeName | undefined,
    reason: msg.reason,
    since: msg.since,
    source: enumName(Source, msg.source, "SOURCE_") as SourceName | undefined,
    revision: msg.revision,
    recipient: recipient(msg.recipient),
    topic: msg.topic,
    raw: msg,
  };
}

/** One result of BatchCheckConsent, in request order: a decision or an error. */
export interface BatchItem {
  index: number;
  decision: Decision | undefined;
  error: ConsentError | undefined;
}

/** The answer to OptOut / OptIn. */
export interface ChangeResult {
  applied: boolean;
  changed: boolean;
  status: ConsentStatusName | undefined;
  revision: number;
  eventId: string;
  /** True when this event id was already recorded (a retry or a replay). */
  duplicate: boolean;
  recipient: Recipient;
  topic: string;
  recordedAt: Date | undefined;
  raw: OptOutResponse | OptInResponse;
}

export function changeFromPb(msg: OptOutResponse | OptInResponse): ChangeResult {
  return {
    applied: msg.applied,
    changed: msg.changed,
    status: enumName(ConsentStatus, msg.status, "CONSENT_STATUS_") as ConsentStatusName,
    revision: msg.revision,
    eventId: msg.eventId,
    duplicate: msg.duplicate,
    recipient: recipient(msg.recipient),
    topic: msg.topic,
    recordedAt: msg.recordedAt,
    raw: msg,
  };
}

/** The answer to SendIfAllowed: the message is in the outbox. */
export interface SendResult {
  messageId: string;
  acceptedAt: Date | undefined;
  consentRevision: number;
  duplicate: boolean;
  recipient: Recipient;
  /** The key the send carried (generated unless you gave one); "" for none. */
  idempotencyKey: string;
  raw: SendIfAllowedResponse;
}

export function sendFromPb(msg: SendIfAllowedResponse, idempotencyKey: string): SendResult {
  return {
    messageId: msg.messageId,
    acceptedAt: msg.acceptedAt,
    consentRevision: msg.consentRevision,
    duplicate: msg.duplicate,
    recipient: recipient(msg.recipient),
    idempotencyKey,
    raw: msg,
  };
}

/** The answer to HandleInboundMessage. */
export interface InboundResult {
  action: InboundActionName | undefined;
  matchedKeyword: string;
  replyText: string;
  replyMessageId: string;
  revision: number;
  raw: HandleInboundMessageResponse;
}

export function inboundFromPb(msg: HandleInboundMessageResponse): InboundResult {
  return {
    action: enumName(InboundAction, msg.action, "INBOUND_ACTION_") as InboundActionName,
    matchedKeyword: msg.matchedKeyword,
    replyText: msg.replyText,
    replyMessageId: msg.replyMessageId,
    revision: msg.revision,
    raw: msg,
  };
}

/** One consent change in a recipient's history. */
export interface ConsentEvent {
  eventId: string;
  action: ConsentActionName | undefined;
  topic: string;
  source: SourceName | undefined;
  evidence: string;
  occurredAt: Date | undefined;
  recordedAt: Date | undefined;
  applied: boolean;
  revision: number;
  principal: string;
  raw: ConsentEventPb;
}

/** One page of ListConsentEvents, newest first. */
export interface EventPage {
  events: ConsentEvent[];
  nextPageToken: string;
  recipient: Recipient;
  raw: ListConsentEventsResponse;
}

export function eventPageFromPb(msg: ListConsentEventsResponse): EventPage {
  return {
    events: msg.events.map((e) => ({
      eventId: e.eventId,
      action: enumName(ConsentAction, e.action, "CONSENT_ACTION_") as ConsentActionName,
      topic: e.topic,
      source: enumName(Source, e.source, "SOURCE_") as SourceName | undefined,
      evidence: e.evidence,
      occurredAt: e.occurredAt,
      recordedAt: e.recordedAt,
      applied: e.applied,
      revision: e.revision,
      principal: e.principal,
      raw: e,
    })),
    nextPageToken: msg.nextPageToken,
    recipient: recipient(msg.recipient),
    raw: msg,
  };
}

/** The delivery status of an accepted message (GetMessageStatus). */
export interface MessageStatus {
  messageId: string;
  status: MessageStateName | undefined;
  attempts: number;
  lastError: string;
  providerMessageId: string;
  acceptedAt: Date | undefined;
  updatedAt: Date | undefined;
  recipient: Recipient;
  topic: string;
  raw: GetMessageStatusResponse;
}

export function messageStatusFromPb(msg: GetMessageStatusResponse): MessageStatus {
  return {
    messageId: msg.messageId,
    status: enumName(MessageStatusPb, msg.status, "MESSAGE_STATUS_") as MessageStateName,
    attempts: msg.attempts,
    lastError: msg.lastError,
    providerMessageId: msg.providerMessageId,
    acceptedAt: msg.acceptedAt,
    updatedAt: msg.updatedAt,
    recipient: recipient(msg.recipient),
    topic: msg.topic,
    raw: msg,
  };
}

/** Signed opt-out and re-subscribe links (CreateConsentLink). */
export interface ConsentLinks {
  optOutUrl: string;
  resubscribeUrl: string;
  listUnsubscribe: string;
  listUnsubscribePost: string;
  optOutTokenId: string;
  resubscribeTokenId: string;
  expiresAt: Date | undefined;
  recipient: Recipient;
  topic: string;
  /** With `shortLinks`: `<public URL>/l/<code>` forms of the two links ("" otherwise). */
  shortOptOutUrl: string;
  shortResubscribeUrl: string;
  raw: CreateConsentLinkResponse;
}

export function linksFromPb(msg: CreateConsentLinkResponse): ConsentLinks {
  return {
    optOutUrl: msg.optOutUrl,
    resubscribeUrl: msg.resubscribeUrl,
    listUnsubscribe: msg.listUnsubscribe,
    listUnsubscribePost: msg.listUnsubscribePost,
    optOutTokenId: msg.optOutTokenId,
    resubscribeTokenId: msg.resubscribeTokenId,
    expiresAt: msg.expiresAt,
    recipient: recipient(msg.recipient),
    topic: msg.topic,
    shortOptOutUrl: msg.shortOptOutUrl,
    shortResubscribeUrl: msg.shortResubscribeUrl,
    raw: msg,
  };
}
