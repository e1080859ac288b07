"""ConsentAdminService handlers for tenant settings (GetTenantSettings, UpdateTenantSettings).

Proto <-> domain conversion of TenantSettings lives here, beside its only user.
Unknown enum numbers on the wire become field violations, reported together with
the domain's own validation in one BadRequest.
"""

from __future__ import annotations

from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import consent_pb2 as pb
from consent_server.domain.errors import FieldViolation
from consent_server.domain.model import (
    ButtonPayload,
    KeywordKind,
    KeywordSet,
    LanguageTemplates,
    Policy,
    TenantSettings,
)
from consent_server.domain.service import ConsentAuthority

from . import convert as cv
from .consent_service import Ctx, rpc

_KIND_TO_PB = cv.to_pb_by_name(KeywordKind, apb.KeywordKind, "KEYWORD_KIND_")
_KIND_FROM_PB = {v: k for k, v in _KIND_TO_PB.items()}
_POLICY_TO_PB = cv.to_pb_by_name(Policy, pb.DefaultPolicy, "DEFAULT_POLICY_")
# An unset default policy is the default: allow unless opted out.
_POLICY_FROM_PB = {
    pb.DEFAULT_POLICY_UNSPECIFIED: Policy.ALLOW_UNLESS_OPTED_OUT,
    **{v: k for k, v in _POLICY_TO_PB.items()},
}
_KINDS = "KEYWORD_KIND_OPT_OUT, KEYWORD_KIND_OPT_IN or KEYWORD_KIND_HELP"


def settings_to_pb(tenant_id: str, s: TenantSettings) -> apb.TenantSettings:
    """The effective settings on the wire."""
    return apb.TenantSettings(
        tenant_id=tenant_id,
        business_name=s.business_name,
        default_region=s.default_region or "",
        default_policy=_POLICY_TO_PB[s.default_policy],
        topic_policies={t: _POLICY_TO_PB[p] for t, p in s.topic_policies.items()},
        default_language=s.default_language,
        keyword_sets=[
            apb.KeywordSet(
                language=k.language,
                kind=_KIND_TO_PB[k.kind],
                topic=k.topic,
                keywords=list(k.keywords),
            )
            for k in s.keyword_sets
        ],
        button_payloads=[
            apb.ButtonPayload(
                payload=b.payload, kind=_KIND_TO_PB[b.kind], topic=b.topic, language=b.language
            )
            for b in s.button_payloads
        ],
        templates=[
            apb.LanguageTemplates(
                language=t.language,
                opt_out_confirmation=t.opt_out_confirmation,
                opt_in_confirmation=t.opt_in_confirmation,
                help=t.help,
            )
            for t in s.templates
        ],
        infer_opt_out_in_sentences=s.infer_opt_out_in_sentences,
        resubscribe_url=s.resubscribe_url,
        match_button_titles=s.match_button_titles,
        page_languages=list(s.page_languages),
        version=s.version,
    )


def _kind(value: apb.KeywordKind.ValueType, field: str, bad: list[FieldViolation]) -> KeywordKind:
    kind = _KIND_FROM_PB.get(value)
    if kind is None:
        bad.append(FieldViolation(field, f"must be one of {_KINDS}"))
        return KeywordKind.HELP  # placeholder; the request is refused anyway
    return kind


def settings_from_pb(msg: apb.TenantSettings) -> tuple[TenantSettings, list[FieldViolation]]:
    """Wire settings as domain values, and the fields that cannot be decoded."""
    bad: list[FieldViolation] = []
    policy = _POLICY_FROM_PB.get(msg.default_policy)
    if policy is None:
        bad.append(FieldViolation("settings.default_policy", "is not a known DefaultPolicy"))
    topic_policies: dict[str, Policy] = {}
    for topic, value in msg.topic_policies.items():
        p = _POLICY_FROM_PB.get(value)
        if p is None or value == pb.DEFAULT_POLICY_UNSPECIFIED:
            bad.append(
                FieldViolation(
                    f"settings.topic_policies[{topic[:64]!r}]",
                    "must be DEFAULT_POLICY_ALLOW_UNLESS_OPTED_OUT or _REQUIRE_OPT_IN",
                )
            )
        else:
            topic_policies[topic] = p
    settings = TenantSettings(
        business_name=msg.business_name,
        default_region=msg.default_region or None,
        default_policy=policy or Policy.ALLOW_UNLESS_OPTED_OUT,
        topic_policies=topic_policies,
        default_language=msg.default_language,
        keyword_sets=tuple(
            KeywordSet(
                k.language,
                _kind(k.kind, f"settings.keyword_sets[{i}].kind", bad),
                tuple(k.keywords),
                k.topic,
            )
            for i, k in enumerate(msg.keyword_sets)
        ),
        button_payloads=tuple(
            ButtonPayload(
                b.payload,
                _kind(b.kind, f"settings.button_payloads[{i}].kind", bad),
                b.topic,
                b.language,
            )
            for i, b in enumerate(msg.button_payloads)
        ),
        templates=tuple(
            LanguageTemplates(t.language, t.opt_out_confirmation, t.opt_in_confirmation, t.help)
            for t in msg.templates
        ),
        infer_opt_out_in_sentences=msg.infer_opt_out_in_sentences,
        resubscribe_url=msg.resubscribe_url,
        match_button_titles=msg.match_button_titles,
        page_languages=tuple(msg.page_languages),
    )
    return settings, bad


class TenantSettingsHandlers:
    """GetTenantSettings and UpdateTenantSettings, on the consent use cases."""

    def __init__(self, authority: ConsentAuthority) -> None:
        self._a = authority

    @rpc
    async def GetTenantSettings(
        self, request: apb.GetTenantSettingsRequest, context: Ctx
    ) -> apb.TenantSettings:
        settings = await self._a.get_settings(request.tenant_id)
        return settings_to_pb(request.tenant_id, settings)

    @rpc
    async def UpdateTenantSettings(
        self, request: apb.UpdateTenantSettingsRequest, context: Ctx
    ) -> apb.TenantSettings:
        paths = list(request.update_mask.paths)
        patch, bad = settings_from_pb(request.settings)
        # Only fields the mask names are read, so only their decoding problems count.
        if "*" not in paths:
            masked = tuple(f"settings.{p}" for p in paths)
            bad = [v for v in bad if v.field.startswith(masked)]
        settings = await self._a.update_settings(
            request.tenant_id,
            patch,
            paths,
            bad,
            expected_version=request.version if request.HasField("version") else None,
        )
        return settings_to_pb(request.tenant_id, settings)


__all__ = ["TenantSettingsHandlers", "settings_from_pb", "settings_to_pb"]
