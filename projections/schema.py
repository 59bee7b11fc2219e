"""The store's tables. Alembic migrations in `projections/migrations` create them; this is their mirror."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

hub_meta = Table(
    "hub_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

projection_checkpoints = Table(
    "projection_checkpoints",
    metadata,
    Column("consumer", String(128), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, nullable=False),
    # The broker incarnation the offset belongs to: offsets from an earlier (memory-only)
    # broker say nothing about a new one.
    Column("incarnation", String(64), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

cases = Table(
    "cases",
    metadata,
    Column("case_id", String(128), primary_key=True),
    Column("township", String(64), nullable=True),
    Column("category", String(64), nullable=True),
    Column("handling_unit", String(128), nullable=True),
    Column("title", Text, nullable=True),
    Column("case_number", String(128), nullable=True),
    Column("requires_legal_review", Boolean, nullable=True),
    Column("stage", String(32), nullable=False),
    Column("stage_rank", Integer, nullable=False),
    Column("outcome", String(32), nullable=True),
    Column("fine_amount_fen", BigInteger, nullable=True),
    Column("filed_at", DateTime(timezone=True), nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("closed_at", DateTime(timezone=True), nullable=True),
    Column("last_event_at", DateTime(timezone=True), nullable=False),
    Column("event_count", Integer, nullable=False),
    # The first reconsideration (复议) brought against the decision, and its result (撤改 when
    # revoked or changed): the yearly figures count them.
    Column("reconsideration_filed_at", DateTime(timezone=True), nullable=True),
    Column("reconsideration_result", String(32), nullable=True),
)
Index("ix_cases_township_case", cases.c.township, cases.c.case_id)
Index("ix_cases_filed_at", cases.c.filed_at)
Index("ix_cases_reconsideration_filed_at", cases.c.reconsideration_filed_at)

event_history = Table(
    "event_history",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("subject", String(128), nullable=False),
    Column("area", String(64), nullable=False),
    Column("type", String(128), nullable=False),
    Column("source", String(128), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
)
Index(
    "ix_event_history_subject_time",
    event_history.c.area,
    event_history.c.subject,
    event_history.c.occurred_at,
)

matters = Table(
    "matters",
    metadata,
    Column("subject_id", String(128), primary_key=True),
    Column("area", String(64), primary_key=True),
    Column("township", String(64), nullable=True),
    Column("case_id", String(128), nullable=True),
    Column("initiator", String(128), nullable=True),
    Column("opened_at", DateTime(timezone=True), nullable=True),
    Column("closed_at", DateTime(timezone=True), nullable=True),
    Column("reopened_at", DateTime(timezone=True), nullable=True),
    Column("last_event_at", DateTime(timezone=True), nullable=False),
    Column("last_event_type", String(128), nullable=False),
    Column("event_count", Integer, nullable=False),
)
Index("ix_matters_area_township", matters.c.area, matters.c.township)
Index("ix_matters_case", matters.c.case_id)

matter_parties = Table(
    "matter_parties",
    metadata,
    Column("subject_id", String(128), primary_key=True),
    Column("area", String(64), primary_key=True),
    Column("unit_id", String(128), primary_key=True),
)
Index("ix_matter_parties_unit", matter_parties.c.unit_id)

anomalies = Table(
    "anomalies",
    metadata,
    Column("anomaly_id", String(64), primary_key=True),
    Column("subject", String(128), nullable=False),
    Column("area", String(64), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("category", String(32), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("event_type", String(128), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("detected_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    Column("detail", Text, nullable=False),
    # Where the anomaly belongs, for township-scoped readers and for routing its alert.
    Column("township", String(64), nullable=True),
    # When its `anomaly.detected` event was acknowledged by the broker; NULL: not yet announced.
    Column("announced_at", DateTime(timezone=True), nullable=True),
)
Index("ix_anomalies_subject", anomalies.c.area, anomalies.c.subject)
Index("ix_anomalies_announced", anomalies.c.announced_at)

directory_units = Table(
    "directory_units",
    metadata,
    Column("unit_id", String(128), primary_key=True),
    Column("kind", String(32), nullable=True),
    Column("name_zh", Text, nullable=True),
    Column("name_en", Text, nullable=True),
    Column("home_township", String(64), nullable=True),
    # JSON arrays as text: both stores read them the same way.
    Column("jurisdiction", Text, nullable=True),
    Column("publishes", Text, nullable=True),
    Column("officers", Integer, nullable=True),
    Column("retired_at", DateTime(timezone=True), nullable=True),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Column("event_id", String(64), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("unit_id", String(128), nullable=False),
    # SHA-256 of a 256-bit random secret: a slow KDF adds nothing for secrets of that entropy.
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    # NULL: never expires. A rotated key points at its successor and expires after a grace period.
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("replaced_by", String(32), nullable=True),
)
Index("ix_api_keys_unit", api_keys.c.unit_id)

clocks = Table(
    "clocks",
    metadata,
    Column("clock_id", String(64), primary_key=True),
    Column("rule_id", String(64), nullable=False),
    Column("rule_version", Integer, nullable=False),
    Column("area", String(64), nullable=False),
    Column("subject", String(128), nullable=False),
    Column("party", String(128), nullable=False),
    Column("responsible", String(128), nullable=True),
    Column("township", String(64), nullable=True),
    Column("case_id", String(128), nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("start_deadline", Date, nullable=True),
    Column("reset_at", DateTime(timezone=True), nullable=True),
    Column("reset_deadline", Date, nullable=True),
    Column("stopped_at", DateTime(timezone=True), nullable=True),
    Column("extended_to", Date, nullable=True),
    Column("paused_at", DateTime(timezone=True), nullable=True),
    Column("resumed_at", DateTime(timezone=True), nullable=True),
    Column("measured_from", Date, nullable=True),
    Column("measured_date", Date, nullable=True),
    Column("acknowledged_at", DateTime(timezone=True), nullable=True),
    # Comma-separated ladder levels already raised / withdrawn in the current cycle.
    Column("fired", Text, nullable=False),
    Column("withdrawn", Text, nullable=False),
    Column("deadline", DateTime(timezone=True), nullable=True),
    Column("provisional", Boolean, nullable=False),
    Column("calendar_version", String(64), nullable=False),
    Column("next_check_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_clocks_next_check", clocks.c.next_check_at)
Index("ix_clocks_subject", clocks.c.area, clocks.c.subject)
Index(
    "ix_clocks_provisional",
    clocks.c.calendar_version,
    postgresql_where=clocks.c.provisional,
    sqlite_where=clocks.c.provisional,
)

alerts = Table(
    "alerts",
    metadata,
    Column("alert_id", String(64), primary_key=True),
    Column("clock_id", String(64), nullable=False),
    Column("rule_id", String(64), nullable=False),
    Column("rule_name_zh", Text, nullable=False),
    Column("rule_name_en", Text, nullable=False),
    Column("citation", Text, nullable=False),
    Column("level", String(32), nullable=False),
    Column("about_area", String(64), nullable=False),
    Column("about_subject", String(128), nullable=False),
    Column("responsible_unit", String(128), nullable=True),
    Column("township", String(64), nullable=True),
    Column("case_id", String(128), nullable=True),
    Column("deadline", DateTime(timezone=True), nullable=False),
    Column("threshold", DateTime(timezone=True), nullable=False),
    Column("overdue_seconds", BigInteger, nullable=False),
    Column("provisional", Boolean, nullable=False),
    Column("proposed_order", Text, nullable=True),
    Column("raised_at", DateTime(timezone=True), nullable=False),
    Column("withdrawn_at", DateTime(timezone=True), nullable=True),
    Column("acknowledged_at", DateTime(timezone=True), nullable=True),
    Column("acknowledged_by", String(128), nullable=True),
)
Index("ix_alerts_clock", alerts.c.clock_id)

alert_recipients = Table(
    "alert_recipients",
    metadata,
    Column("alert_id", String(64), primary_key=True),
    Column("unit_id", String(128), primary_key=True),
)
Index("ix_alert_recipients_unit", alert_recipients.c.unit_id)

deliveries = Table(
    "deliveries",
    metadata,
    Column("delivery_id", String(64), primary_key=True),
    Column("alert_id", String(64), nullable=False),
    Column("unit_id", String(128), nullable=False),
    Column("target", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
)
Index("ix_deliveries_due", deliveries.c.status, deliveries.c.next_attempt_at)

connector_runs = Table(
    "connector_runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("connector", String(64), nullable=False),
    Column("source_unit", String(128), nullable=True),
    Column("input", Text, nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("detail", Text, nullable=False),
    # JSON object: read, published, rejected, retried, dead_lettered.
    Column("counts", Text, nullable=False),
)
Index("ix_connector_runs_connector", connector_runs.c.connector, connector_runs.c.finished_at)

# 案卷评查: one row per scored case file, for pass rates and average scores.
file_reviews = Table(
    "file_reviews",
    metadata,
    Column("review_id", String(128), primary_key=True),
    Column("reviewed_unit", String(128), nullable=False),
    Column("township", String(64), nullable=True),
    Column("score", Integer, nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("reviewing_body", Text, nullable=True),
    Column("review_batch", String(128), nullable=True),
    Column("case_id", String(128), nullable=True),
    Column("case_number", String(128), nullable=True),
    Column("problems", Integer, nullable=False),
    Column("scored_at", DateTime(timezone=True), nullable=False),
)
Index("ix_file_reviews_township", file_reviews.c.township, file_reviews.c.scored_at)

# 职责争议清单: a dispute from raising to its entry in the district's list.
disputes = Table(
    "disputes",
    metadata,
    Column("dispute_id", String(128), primary_key=True),
    Column("township", String(64), nullable=True),
    Column("matter", Text, nullable=True),
    # JSON array of directory ids, as text: both stores read it the same way.
    Column("units", Text, nullable=True),
    Column("case_id", String(128), nullable=True),
    # raised, referred, decided or listed; never moves back when facts arrive out of order.
    Column("status", String(16), nullable=False),
    Column("raised_at", DateTime(timezone=True), nullable=True),
    Column("referred_to", String(128), nullable=True),
    Column("referred_at", DateTime(timezone=True), nullable=True),
    Column("responsible_unit", String(128), nullable=True),
    Column("basis", Text, nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("list_entry_id", String(128), nullable=True),
    Column("matter_category", String(64), nullable=True),
    Column("listed_at", DateTime(timezone=True), nullable=True),
    Column("last_event_at", DateTime(timezone=True), nullable=False),
)
Index("ix_disputes_township", disputes.c.township, disputes.c.dispute_id)

# Post-approval inspections (事中事后监管), keyed by their subject, for the repeat-inspection check.
inspections = Table(
    "inspections",
    metadata,
    Column("subject", String(128), primary_key=True),
    Column("inspecting_unit", String(128), nullable=True),
    Column("township", String(64), nullable=True),
    # "uscc:<credit code>" when the business is identified, else "name:<business name>".
    Column("business_key", String(160), nullable=True),
    Column("business_name", Text, nullable=True),
    Column("tasked_at", DateTime(timezone=True), nullable=True),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    Column("finding", String(32), nullable=True),
)
Index("ix_inspections_business", inspections.c.business_key, inspections.c.tasked_at)

# The record (全过程记录): every event once, in one hash chain. `record` is the canonical JSON the
# hash covers; parties' personal data inside it is encrypted under the party's key.
archive = Table(
    "archive",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("subject", String(128), nullable=False),
    Column("record", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
Index("ix_archive_subject", archive.c.subject)

# The chain's head, one row (chain = 1), locked by each appending batch.
archive_head = Table(
    "archive_head",
    metadata,
    Column("chain", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# One data key per party, wrapped under the master key. Deleting `wrapped_key` erases the person
# (crypto-shredding): the ciphertexts stay, and so does the chain that covers them.
party_keys = Table(
    "party_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("party_ref", String(64), nullable=False),
    Column("wrapped_key", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("shredded_at", DateTime(timezone=True), nullable=True),
)
Index("ix_party_keys_party", party_keys.c.party_ref)

# The latest personal data of each party of a case or matter, encrypted (base64 of nonce|ciphertext).
parties = Table(
    "parties",
    metadata,
    Column("subject", String(128), primary_key=True),
    Column("area", String(64), primary_key=True),
    Column("party_ref", String(64), primary_key=True),
    Column("key_id", String(32), nullable=False),
    Column("kind", String(32), nullable=True),
    Column("name_ct", Text, nullable=True),
    Column("id_number_ct", Text, nullable=True),
    Column("phone_ct", Text, nullable=True),
    Column("address_ct", Text, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
