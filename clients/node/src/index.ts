/** The consent authority's TypeScript client (`consent.v1` over gRPC). */

export * from "./client";
export * from "./errors";
export * from "./types";
export * as pb from "./gen/consent/v1/consent";
export * as adminPb from "./gen/consent/v1/admin";
