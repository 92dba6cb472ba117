"""Marketing channels and the GA4-like grouping that derives one from utm and referrer.

A producer may name the channel itself; when it does not, the channel is derived
the way GA4's default channel grouping does it, folded onto leadlag's eight
channels: paid media first, then email, social, organic search, referral and
events, `other` for tagged traffic that fits none, `direct` for a session with
neither utm nor referrer.
"""

from __future__ import annotations

from enum import StrEnum
from urllib.parse import urlsplit


class Channel(StrEnum):
    ORGANIC = "organic"
    PAID = "paid"
    DIRECT = "direct"
    REFERRAL = "referral"
    SOCIAL = "social"
    EMAIL = "email"
    EVENT = "event"
    OTHER = "other"


UNKNOWN_CHANNEL = "unknown"
"""Label for a contact or account with no touchpoint at all (no session, no form fill)."""

SEARCH_ENGINES = frozenset({"google", "bing", "yahoo", "duckduckgo", "baidu", "yandex", "ecosia", "naver", "startpage"})
SOCIAL_SITES = frozenset(
    {
        "facebook",
        "instagram",
        "linkedin",
        "lnkd",
        "twitter",
        "t",
        "x",
        "youtube",
        "reddit",
        "tiktok",
        "pinterest",
        "threads",
        "mastodon",
        "bsky",
    }
)
PAID_MEDIA = frozenset({"cpc", "ppc", "cpm", "cpv", "cpa", "paid", "paidsearch", "paid_search", "display", "banner"})
SOCIAL_MEDIA = frozenset(
    {"social", "social-network", "social-media", "sm", "social network", "social media", "organic_social"}
)
EMAIL_MEDIA = frozenset({"email", "e-mail", "e_mail", "newsletter"})
REFERRAL_MEDIA = frozenset({"referral", "affiliate", "partner"})
EVENT_MEDIA = frozenset({"event", "events", "webinar", "conference", "tradeshow", "meetup"})


def _site_name(source_or_host: str) -> str:
    """`www.google.co.uk` -> `google`; `linkedin.com` -> `linkedin`; `google` -> `google`."""
    host = source_or_host.lower().strip()
    if "//" in host:
        host = urlsplit(host).hostname or ""
    labels = [label for label in host.split(".") if label and label not in {"www", "m", "l", "lm"}]
    if not labels:
        return ""
    if len(labels) == 1:
        return labels[0]
    # drop the public suffix: example.com, example.co.uk
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in {"co", "com", "ac", "org", "net"}:
        return labels[-3]
    return labels[-2]


def channel_from_utm(source: str | None, medium: str | None) -> Channel:
    """The channel of a session tagged with utm parameters (GA4's rules, first match wins)."""
    site = _site_name(source or "")
    med = (medium or "").lower().strip()
    if med in PAID_MEDIA or med.startswith(("paid", "cp")):
        return Channel.PAID
    if med in EMAIL_MEDIA or site in EMAIL_MEDIA:
        return Channel.EMAIL
    if med in SOCIAL_MEDIA or site in SOCIAL_SITES:
        return Channel.SOCIAL
    if med == "organic" or site in SEARCH_ENGINES:
        return Channel.ORGANIC
    if med in REFERRAL_MEDIA:
        return Channel.REFERRAL
    if med in EVENT_MEDIA:
        return Channel.EVENT
    return Channel.OTHER


def channel_from_referrer(referrer: str) -> Channel:
    """The channel of an untagged session that came from another site."""
    site = _site_name(referrer)
    if site in SEARCH_ENGINES:
        return Channel.ORGANIC
    if site in SOCIAL_SITES:
        return Channel.SOCIAL
    if not site:
        return Channel.DIRECT
    return Channel.REFERRAL


def derive_channel(utm_source: str | None, utm_medium: str | None, has_utm: bool, referrer: str | None) -> Channel:
    """GA4-like default channel grouping: utm first, then the referrer, else `direct`."""
    if has_utm:
        return channel_from_utm(utm_source, utm_medium)
    if referrer:
        return channel_from_referrer(referrer)
    return Channel.DIRECT


NO_CAMPAIGN = "none"
"""Campaign label of a touch or spend with no campaign."""
