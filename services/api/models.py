"""Response schemas of the query API, for /openapi.json. The routes build their JSON themselves;
these models document it (FastAPI does not re-validate a Response a route returns)."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")
Time = str | None  # ISO 8601 with offset (UTC), or null


class ColumnModel(BaseModel):
    key: str = Field(description="Key of the field in each item")
    zh: str = Field(description="Chinese label (the export's header starts with it)")
    en: str = Field(description="English label")


class Listing(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(description="Rows matching the filters, over all pages")
    limit: int
    offset: int
    columns: list[ColumnModel] = Field(description="The exported columns, in order, with their labels")


class FieldProblemModel(BaseModel):
    field: str
    reason: str
    index: int | None = None


class ProblemModel(BaseModel):
    """RFC 9457 problem details (media type application/problem+json)."""

    type: str
    title: str
    title_zh: str
    status: int
    detail: str | None = None
    errors: list[FieldProblemModel] | None = None


class Me(BaseModel):
    unit: str
    name_zh: str
    name_en: str
    kind: str
    role: str = Field(description="district, township, unit, auditor or public")
    townships: list[str] = Field(description="Township codes the viewer may read")
    person: str | None = Field(default=None, description="A token's person; null for an API key")
    credential: str = Field(default="key", description="key or token (a session is a token)")


class TownshipItem(BaseModel):
    township: str
    name_zh: str
    name_en: str


class Reference(BaseModel):
    cases_per_officer: float = Field(description="The district's published figure (79.95)")


class OverviewFigures(BaseModel):
    cases_filed: int
    cases_open: int
    cases_closed: int
    officers: int
    cases_per_officer: float | None
    on_time_rate: float | None
    clocks_on_time: int
    clocks_late: int
    clocks_open_overdue: int
    loops_open: int
    loops_overdue: int
    loops_escalated: int
    anomalies_open: int


class OverviewRow(OverviewFigures):
    township: str | None
    name_zh: str
    rank: int = Field(description="1 = best: on_time_rate descending (null last), then loops_overdue")


class OverviewListing(Listing[OverviewRow]):
    totals: OverviewFigures = Field(description="Totals over the townships in the viewer's scope")
    reference: Reference


class TrendRow(BaseModel):
    period: str = Field(description="'2022-03' (month) or '2022-W09' (ISO week), China time")
    cases_filed: int
    cases_decided: int
    cases_closed: int


class StagesRow(BaseModel):
    group: str | None
    name_zh: str
    lead: int
    filed: int
    investigating: int
    legal_review: int
    notified: int
    decided: int
    served: int
    executing: int
    closed: int
    archived: int
    total: int


class LoadRow(BaseModel):
    group: str | None
    name_zh: str
    cases_filed: int
    officers: int
    cases_per_officer: float | None


class LoadListing(Listing[LoadRow]):
    totals: LoadRow
    reference: Reference


class OnTimeRow(BaseModel):
    group: str | None
    name_zh: str
    closed: int
    on_time: int
    late: int
    open: int
    open_overdue: int
    on_time_rate: float | None


class LoopRow(BaseModel):
    area: str
    name_zh: str
    open: int
    overdue: int
    escalated: int
    closed: int


class ReconsiderationRow(BaseModel):
    group: str | None
    name_zh: str
    decided: int
    reconsiderations: int
    revoked_or_changed: int
    reconsideration_rate: float | None
    revoked_or_changed_rate: float | None


class FileReviewStatsRow(BaseModel):
    group: str | None
    name_zh: str
    reviews: int
    passed: int
    pass_rate: float | None
    average_score: float | None


class FileReviewItem(BaseModel):
    review_id: str
    reviewed_unit: str
    township: str | None
    score: int
    passed: bool
    reviewing_body: str | None
    review_batch: str | None
    case_id: str | None
    case_number: str | None
    problems: int
    scored_at: Time


class PublicationItem(BaseModel):
    case_id: str
    township: str | None
    handling_unit: str | None
    category: str | None
    outcome: str | None
    decided_at: Time
    deadline: Time
    published_at: Time
    publication_id: str | None = Field(description="Id of the latest case.published event")
    withdrawn_at: Time
    status: str = Field(description="pending, overdue, published or withdrawn")


class DisputeItem(BaseModel):
    dispute_id: str
    township: str | None
    matter: str | None
    units: list[str]
    status: str
    raised_at: Time
    referred_to: str | None
    referred_at: Time
    decided_at: Time
    responsible_unit: str | None
    basis: str | None
    case_id: str | None
    list_entry_id: str | None
    matter_category: str | None
    listed_at: Time


class CoordinationItem(BaseModel):
    area: str
    area_name_zh: str
    subject_id: str
    township: str | None
    case_id: str | None
    initiator: str | None
    parties: list[str]
    opened_at: Time
    closed_at: Time
    last_event_at: Time
    last_event_type: str
    overdue: bool
    escalated: bool
    status: str = Field(description="open, overdue or closed")


class AnomalyItem(BaseModel):
    anomaly_id: str
    kind: str
    kind_zh: str
    category: str
    township: str | None
    area: str
    subject: str
    event_id: str
    event_type: str
    detail: str
    occurred_at: Time
    detected_at: Time
    resolved_at: Time
    announced_at: Time
    open: bool


class CaseItem(BaseModel):
    case_id: str
    township: str | None
    category: str | None
    handling_unit: str | None
    title: str | None
    case_number: str | None
    requires_legal_review: bool | None
    stage: str
    outcome: str | None
    fine_amount_fen: int | None
    filed_at: Time
    decided_at: Time
    closed_at: Time
    last_event_at: Time
    event_count: int
    reconsideration_filed_at: Time
    reconsideration_result: str | None


class CaseListing(Listing[CaseItem]):
    next_after: str | None = Field(default=None, description="Keyset cursor: pass as `after`")


class PartyItem(BaseModel):
    party_ref: str = Field(
        description="A keyed reference to the person (no personal data); erased-… once erased"
    )
    kind: str | None = Field(
        description="The party's role in the events: party, reporter, plaintiff, applicant…"
    )
    name: str | None
    id_number: str | None
    phone: str | None
    address: str | None
    masked: bool = Field(description="True when the viewer is not entitled to the values in clear")
    erased: bool = Field(description="True when the party's key was shredded: the values are gone")


class CaseDetail(CaseItem):
    events: list[dict[str, Any]] = Field(description="Full-process record (全过程记录), oldest first")
    clocks: list[dict[str, Any]]
    matters: list[dict[str, Any]]
    anomalies: list[dict[str, Any]]
    parties: list[PartyItem] = Field(
        description="Parties named by the case's events, masked unless the viewer is entitled (当事人)"
    )


class AuditHead(BaseModel):
    seq: int = Field(description="Records in the archive's hash chain (the last one's seq)")
    hash: str = Field(description="SHA-256 (hex) of the last record's link: anchor it to check later")
    updated_at: str | None


class MatterItem(BaseModel):
    subject_id: str
    area: str
    township: str | None
    case_id: str | None
    initiator: str | None
    opened_at: Time
    closed_at: Time
    reopened_at: Time
    last_event_at: Time
    last_event_type: str
    event_count: int
    open: bool


class MatterListing(Listing[MatterItem]):
    next_after: str | None = None


class MatterDetail(MatterItem):
    parties: list[str]
    events: list[dict[str, Any]]


class UnitItem(BaseModel):
    unit_id: str
    kind: str | None
    name_zh: str | None
    name_en: str | None
    home_township: str | None
    jurisdiction: list[str]
    publishes: list[str]
    officers: int | None
    retired_at: Time
    changed_at: Time
    event_id: str


class Calibration(BaseModel):
    year: int
    cases_filed: int
    officers: int
    cases_per_officer: float | None
    reconsiderations: int
    revoked_or_changed: int
    basis: dict[str, str]
