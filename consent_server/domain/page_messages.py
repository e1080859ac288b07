# ruff: noqa: RUF001  (French typography uses the right single quotation mark)
"""The words of the consent-link pages in every language we ship, and the choice of
language for one request.

Pure: no I/O. Every language has every key with the same placeholders
(tests/test_page_messages.py proves it), so a page never shows a key or a raw
``{placeholder}``. A page's language is one of the tenant's ``page_languages`` (or
the tenant's default language), chosen from ``?lang=`` first, then the browser's
``Accept-Language`` (q-values, ``pt-BR`` -> ``pt``), then the tenant's default.
The result is always a validated tag from the tenant's list, never the request's
text, so it is safe in ``<html lang>`` and in a ``Content-Language`` header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

FALLBACK = "en"
# Bounds on what we parse from a header an attacker controls.
MAX_HEADER_CHARS = 1024
MAX_ENTRIES = 32
_TAG_RE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8}){0,3}$")
_Q_RE = re.compile(r"^q=(0(\.\d{0,3})?|1(\.0{0,3})?)$")

_EN = {
    "title_opt_out": "Unsubscribe",
    "title_opt_in": "Subscribe again",
    "button_opt_out": "Unsubscribe",
    "button_opt_in": "Subscribe",
    "ask_opt_out": "Stop receiving {what} from {business} to {who} by {channel}?",
    "ask_opt_in": "Receive {what} from {business} to {who} by {channel} again?",
    "what_topic": "“{topic}” messages",
    "what_all": "all messages",
    "nothing_changes": "Nothing changes until you press the button.",
    "done_opt_out_title": "You are unsubscribed",
    "done_opt_out": "You will no longer receive {what} from {business} to {who} by {channel}.",
    "already_opt_out": "You were already unsubscribed from {what} from {business} to {who} "
    "by {channel}.",
    "done_opt_in_title": "You are subscribed",
    "done_opt_in": "You will receive {what} from {business} to {who} by {channel} again.",
    "already_opt_in": "You were already subscribed to {what} from {business} to {who} "
    "by {channel}.",
    "expired_title": "This link has expired",
    "expired_text": "Links in our messages expire after a while. Use the link in a more recent "
    "message, or reply to one of our messages to change your preferences.",
    "invalid_title": "This link is not valid",
    "invalid_text": "It may have been cut short or altered. Copy the whole link from the "
    "message and try again.",
    "gone_title": "This link is no longer valid",
    "gone_text": "The business it belongs to no longer uses this service. Nothing has changed.",
    "not_found_title": "Link not found",
    "not_found_text": "This link does not exist or has expired. Nothing has changed. Use the "
    "link in a more recent message, or reply to one of our messages.",
    "unavailable_title": "Please try again shortly",
    "unavailable_text": "We could not record your choice just now. Nothing has changed yet.",
    "too_many_title": "Too many attempts",
    "too_many_text": "Please wait a minute and try again. Nothing has changed.",
    "error_title": "Something went wrong",
    "error_text": "Nothing has changed. Please try again later (incident {incident}).",
    "channel_whatsapp": "WhatsApp",
    "channel_sms": "SMS",
    "channel_email": "e-mail",
    "channel_rcs": "RCS",
    "channel_voice": "phone call",
}

_ES = {
    "title_opt_out": "Darse de baja",
    "title_opt_in": "Volver a suscribirse",
    "button_opt_out": "Darme de baja",
    "button_opt_in": "Suscribirme",
    "ask_opt_out": "¿Dejar de recibir {what} de {business} en {who} por {channel}?",
    "ask_opt_in": "¿Volver a recibir {what} de {business} en {who} por {channel}?",
    "what_topic": "mensajes «{topic}»",
    "what_all": "todos los mensajes",
    "nothing_changes": "No cambia nada hasta que pulse el botón.",
    "done_opt_out_title": "Se ha dado de baja",
    "done_opt_out": "Ya no recibirá {what} de {business} en {who} por {channel}.",
    "already_opt_out": "Ya estaba dado de baja de {what} de {business} en {who} por {channel}.",
    "done_opt_in_title": "Se ha suscrito",
    "done_opt_in": "Volverá a recibir {what} de {business} en {who} por {channel}.",
    "already_opt_in": "Ya estaba suscrito a {what} de {business} en {who} por {channel}.",
    "expired_title": "Este enlace ha caducado",
    "expired_text": "Los enlaces de nuestros mensajes caducan al cabo de un tiempo. Use el "
    "enlace de un mensaje más reciente o responda a uno de nuestros mensajes.",
    "invalid_title": "Este enlace no es válido",
    "invalid_text": "Puede que esté incompleto o alterado. Copie el enlace completo del "
    "mensaje e inténtelo de nuevo.",
    "gone_title": "Este enlace ya no es válido",
    "gone_text": "La empresa a la que pertenece ya no usa este servicio. No ha cambiado nada.",
    "not_found_title": "Enlace no encontrado",
    "not_found_text": "Este enlace no existe o ha caducado. No ha cambiado nada. Use el enlace "
    "de un mensaje más reciente o responda a uno de nuestros mensajes.",
    "unavailable_title": "Inténtelo de nuevo en un momento",
    "unavailable_text": "No hemos podido registrar su elección ahora. Todavía no ha cambiado nada.",
    "too_many_title": "Demasiados intentos",
    "too_many_text": "Espere un minuto e inténtelo de nuevo. No ha cambiado nada.",
    "error_title": "Algo ha fallado",
    "error_text": "No ha cambiado nada. Inténtelo más tarde (incidencia {incident}).",
    "channel_whatsapp": "WhatsApp",
    "channel_sms": "SMS",
    "channel_email": "correo electrónico",
    "channel_rcs": "RCS",
    "channel_voice": "llamada",
}

_PT = {
    "title_opt_out": "Cancelar inscrição",
    "title_opt_in": "Inscrever-se novamente",
    "button_opt_out": "Cancelar inscrição",
    "button_opt_in": "Inscrever-me",
    "ask_opt_out": "Deixar de receber {what} de {business} em {who} por {channel}?",
    "ask_opt_in": "Voltar a receber {what} de {business} em {who} por {channel}?",
    "what_topic": "mensagens “{topic}”",
    "what_all": "todas as mensagens",
    "nothing_changes": "Nada muda até você pressionar o botão.",
    "done_opt_out_title": "Inscrição cancelada",
    "done_opt_out": "Você não receberá mais {what} de {business} em {who} por {channel}.",
    "already_opt_out": "Sua inscrição em {what} de {business} em {who} por {channel} já "
    "estava cancelada.",
    "done_opt_in_title": "Inscrição feita",
    "done_opt_in": "Você voltará a receber {what} de {business} em {who} por {channel}.",
    "already_opt_in": "Você já estava inscrito em {what} de {business} em {who} por {channel}.",
    "expired_title": "Este link expirou",
    "expired_text": "Os links das nossas mensagens expiram depois de um tempo. Use o link de "
    "uma mensagem mais recente ou responda a uma das nossas mensagens.",
    "invalid_title": "Este link não é válido",
    "invalid_text": "Ele pode ter sido cortado ou alterado. Copie o link inteiro da mensagem "
    "e tente novamente.",
    "gone_title": "Este link não é mais válido",
    "gone_text": "A empresa a que ele pertence não usa mais este serviço. Nada mudou.",
    "not_found_title": "Link não encontrado",
    "not_found_text": "Este link não existe ou expirou. Nada mudou. Use o link de uma mensagem "
    "mais recente ou responda a uma das nossas mensagens.",
    "unavailable_title": "Tente novamente em instantes",
    "unavailable_text": "Não conseguimos registrar sua escolha agora. Nada mudou ainda.",
    "too_many_title": "Tentativas demais",
    "too_many_text": "Aguarde um minuto e tente novamente. Nada mudou.",
    "error_title": "Algo deu errado",
    "error_text": "Nada mudou. Tente novamente mais tarde (incidente {incident}).",
    "channel_whatsapp": "WhatsApp",
    "channel_sms": "SMS",
    "channel_email": "e-mail",
    "channel_rcs": "RCS",
    "channel_voice": "ligação",
}

_FR = {
    "title_opt_out": "Se désabonner",
    "title_opt_in": "Se réabonner",
    "button_opt_out": "Me désabonner",
    "button_opt_in": "M’abonner",
    "ask_opt_out": "Ne plus recevoir {what} de {business} sur {who} par {channel} ?",
    "ask_opt_in": "Recevoir à nouveau {what} de {business} sur {who} par {channel} ?",
    "what_topic": "les messages « {topic} »",
    "what_all": "tous les messages",
    "nothing_changes": "Rien ne change tant que vous n’appuyez pas sur le bouton.",
    "done_opt_out_title": "Vous êtes désabonné",
    "done_opt_out": "Vous ne recevrez plus {what} de {business} sur {who} par {channel}.",
    "already_opt_out": "Vous étiez déjà désabonné de {what} de {business} sur {who} par {channel}.",
    "done_opt_in_title": "Vous êtes abonné",
    "done_opt_in": "Vous recevrez à nouveau {what} de {business} sur {who} par {channel}.",
    "already_opt_in": "Vous étiez déjà abonné à {what} de {business} sur {who} par {channel}.",
    "expired_title": "Ce lien a expiré",
    "expired_text": "Les liens de nos messages expirent au bout d’un certain temps. Utilisez "
    "le lien d’un message plus récent ou répondez à l’un de nos messages.",
    "invalid_title": "Ce lien n’est pas valide",
    "invalid_text": "Il a peut-être été tronqué ou modifié. Copiez le lien complet du message "
    "et réessayez.",
    "gone_title": "Ce lien n’est plus valide",
    "gone_text": "L’entreprise à laquelle il appartient n’utilise plus ce service. Rien n’a "
    "changé.",
    "not_found_title": "Lien introuvable",
    "not_found_text": "Ce lien n’existe pas ou a expiré. Rien n’a changé. Utilisez le lien "
    "d’un message plus récent ou répondez à l’un de nos messages.",
    "unavailable_title": "Veuillez réessayer dans un instant",
    "unavailable_text": "Nous n’avons pas pu enregistrer votre choix pour le moment. Rien n’a "
    "encore changé.",
    "too_many_title": "Trop de tentatives",
    "too_many_text": "Patientez une minute et réessayez. Rien n’a changé.",
    "error_title": "Une erreur s’est produite",
    "error_text": "Rien n’a changé. Réessayez plus tard (incident {incident}).",
    "channel_whatsapp": "WhatsApp",
    "channel_sms": "SMS",
    "channel_email": "e-mail",
    "channel_rcs": "RCS",
    "channel_voice": "appel",
}

_DE = {
    "title_opt_out": "Abmelden",
    "title_opt_in": "Wieder anmelden",
    "button_opt_out": "Abmelden",
    "button_opt_in": "Anmelden",
    "ask_opt_out": "Keine {what} mehr von {business} an {who} per {channel} erhalten?",
    "ask_opt_in": "Wieder {what} von {business} an {who} per {channel} erhalten?",
    "what_topic": "„{topic}“-Nachrichten",
    "what_all": "Nachrichten",
    "nothing_changes": "Nichts ändert sich, bevor Sie die Schaltfläche drücken.",
    "done_opt_out_title": "Sie sind abgemeldet",
    "done_opt_out": "Sie erhalten keine {what} mehr von {business} an {who} per {channel}.",
    "already_opt_out": "Sie waren von {what} von {business} an {who} per {channel} bereits "
    "abgemeldet.",
    "done_opt_in_title": "Sie sind angemeldet",
    "done_opt_in": "Sie erhalten wieder {what} von {business} an {who} per {channel}.",
    "already_opt_in": "Sie waren für {what} von {business} an {who} per {channel} bereits "
    "angemeldet.",
    "expired_title": "Dieser Link ist abgelaufen",
    "expired_text": "Die Links in unseren Nachrichten laufen nach einiger Zeit ab. Nutzen Sie "
    "den Link aus einer neueren Nachricht oder antworten Sie auf eine unserer Nachrichten.",
    "invalid_title": "Dieser Link ist ungültig",
    "invalid_text": "Er wurde vielleicht gekürzt oder verändert. Kopieren Sie den ganzen Link "
    "aus der Nachricht und versuchen Sie es erneut.",
    "gone_title": "Dieser Link ist nicht mehr gültig",
    "gone_text": "Das Unternehmen, zu dem er gehört, nutzt diesen Dienst nicht mehr. Es hat "
    "sich nichts geändert.",
    "not_found_title": "Link nicht gefunden",
    "not_found_text": "Diesen Link gibt es nicht oder er ist abgelaufen. Es hat sich nichts "
    "geändert. Nutzen Sie den Link aus einer neueren Nachricht.",
    "unavailable_title": "Bitte versuchen Sie es gleich noch einmal",
    "unavailable_text": "Wir konnten Ihre Auswahl gerade nicht speichern. Es hat sich noch "
    "nichts geändert.",
    "too_many_title": "Zu viele Versuche",
    "too_many_text": "Bitte warten Sie eine Minute und versuchen Sie es erneut. Es hat sich "
    "nichts geändert.",
    "error_title": "Etwas ist schiefgelaufen",
    "error_text": "Es hat sich nichts geändert. Bitte versuchen Sie es später erneut "
    "(Vorfall {incident}).",
    "channel_whatsapp": "WhatsApp",
    "channel_sms": "SMS",
    "channel_email": "E-Mail",
    "channel_rcs": "RCS",
    "channel_voice": "Anruf",
}

# Language (primary subtag) -> key -> text.
CATALOGUE: Mapping[str, Mapping[str, str]] = {
    "en": _EN,
    "es": _ES,
    "pt": _PT,
    "fr": _FR,
    "de": _DE,
}
KEYS = frozenset(_EN)


def is_tag(tag: str) -> bool:
    """True for a well-formed lower-case language tag ("en", "pt-br", "zh-hant-tw")."""
    return bool(_TAG_RE.fullmatch(tag))


def covered(tag: str) -> bool:
    """True when the catalogue has words for ``tag`` (itself or its primary language)."""
    return is_tag(tag) and tag.split("-", 1)[0] in CATALOGUE


def messages(tag: str) -> Mapping[str, str]:
    """The words for ``tag``: its primary language's, or English when not covered."""
    return CATALOGUE.get(tag.lower().split("-", 1)[0], CATALOGUE[FALLBACK])


def html_tag(tag: str) -> str:
    """A tag in its usual case for ``<html lang>``: "pt-br" -> "pt-BR"; only letters,
    digits and hyphens (the tag was validated), so safe in HTML and headers."""
    parts = tag.lower().split("-")
    out = [parts[0]]
    for p in parts[1:]:
        out.append(p.upper() if len(p) == 2 else p.title() if len(p) == 4 else p)
    return "-".join(out)


def supported_languages(page_languages: Sequence[str], default_language: str) -> list[str]:
    """The tenant's page languages (covered, lower-cased, first = the default), never
    empty: ``page_languages`` when set, else the tenant's default language if covered,
    else English."""
    out = [t.lower() for t in page_languages if covered(t.lower())]
    if not out:
        out = [default_language.lower()] if covered(default_language.lower()) else [FALLBACK]
    return list(dict.fromkeys(out))


def parse_accept_language(header: str) -> list[str]:
    """The tags of an ``Accept-Language`` header, most wanted first (q=0 and malformed
    entries dropped, "*" kept). Never raises; reads at most MAX_HEADER_CHARS."""
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(header[:MAX_HEADER_CHARS].split(",")[:MAX_ENTRIES]):
        tag, *params = (p.strip() for p in part.split(";"))
        tag = tag.lower()
        if tag != "*" and not is_tag(tag):
            continue
        q = 1.0
        for param in params:
            compact = param.replace(" ", "").lower()
            if compact.startswith("q="):
                q = float(compact[2:]) if _Q_RE.fullmatch(compact) else -1.0
        if q > 0:
            ranked.append((-q, i, tag))
    return [tag for _, _, tag in sorted(ranked)]


def _match(wanted: str, supported: Sequence[str]) -> str | None:
    if wanted in supported:
        return wanted
    primary = wanted.split("-", 1)[0]
    if primary in supported:  # pt-br asked, pt offered
        return primary
    for tag in supported:  # pt asked (or pt-pt), pt-br offered
        if tag.split("-", 1)[0] == primary:
            return tag
    return None


def negotiate(
    supported: Sequence[str], accept_language: str | None = None, override: str | None = None
) -> str:
    """The page language: one of ``supported`` (non-empty, lower-case; first = default).

    ``override`` (``?lang=``) wins when it matches, then ``Accept-Language`` in q order
    with region fallback, then ``supported[0]``. Never raises; never returns text of
    the request that is not in ``supported``.
    """
    wanted: list[str] = []
    if override:
        candidate = override[:64].strip().lower().replace("_", "-")
        if is_tag(candidate):
            wanted.append(candidate)
    wanted.extend(parse_accept_language(accept_language or ""))
    for tag in wanted:
        if tag == "*":
            break
        found = _match(tag, supported)
        if found is not None:
            return found
    return supported[0]
