-- One table per message kind: the payload's fields as columns, the whole payload as JSONB.
-- Every table is partitioned by day on wall_time (the rig's UTC time of the message);
-- the ingest creates partitions ahead and drops those past the retention. A partitioned
-- table's unique key must hold the partition key, so idempotence is on
-- (msg_id, wall_time): a redelivered message carries the same bytes, hence both.

CREATE TABLE me_events (
    msg_id        text        NOT NULL,
    rig_id        text        NOT NULL,
    seq           bigint      NOT NULL,
    t_ns          bigint      NOT NULL,
    wall_time     timestamptz NOT NULL,
    ingested_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind          text        NOT NULL,
    onset_ns      bigint,
    apex_ns       bigint,
    offset_ns     bigint,
    onset_frame   integer,
    apex_frame    integer,
    offset_frame  integer,
    regions       text[],
    aus           text[],
    confidence    double precision,
    visual_probs  jsonb,
    payload       jsonb       NOT NULL,
    UNIQUE (msg_id, wall_time)
) PARTITION BY RANGE (wall_time);

CREATE TABLE emotion_events (
    msg_id         text        NOT NULL,
    rig_id         text        NOT NULL,
    seq            bigint      NOT NULL,
    t_ns           bigint      NOT NULL,
    wall_time      timestamptz NOT NULL,
    ingested_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    me_msg_id      text        NOT NULL,
    apex_ns        bigint,
    window_t0_ns   bigint,
    window_t1_ns   bigint,
    predicted      text        NOT NULL,
    predicted_emotion text,
    composite      jsonb,
    emotions       jsonb,
    contrib_visual double precision,
    contrib_eeg    double precision,
    contrib_peripheral double precision,
    model_version  text,
    payload        jsonb       NOT NULL,
    UNIQUE (msg_id, wall_time)
) PARTITION BY RANGE (wall_time);

CREATE TABLE vitals (
    msg_id      text        NOT NULL,
    rig_id      text        NOT NULL,
    seq         bigint      NOT NULL,
    t_ns        bigint      NOT NULL,
    wall_time   timestamptz NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    hr_bpm      double precision,
    rr_bpm      double precision,
    eda_us      double precision,
    skt_c       double precision,
    eeg_bands   jsonb,
    payload     jsonb       NOT NULL,
    UNIQUE (msg_id, wall_time)
) PARTITION BY RANGE (wall_time);

CREATE TABLE markers (
    msg_id      text        NOT NULL,
    rig_id      text        NOT NULL,
    seq         bigint      NOT NULL,
    t_ns        bigint      NOT NULL,
    wall_time   timestamptz NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    code        integer     NOT NULL,
    marker_t_ns bigint      NOT NULL,
    payload     jsonb       NOT NULL,
    UNIQUE (msg_id, wall_time)
) PARTITION BY RANGE (wall_time);

CREATE TABLE health (
    msg_id         text        NOT NULL,
    rig_id         text        NOT NULL,
    seq            bigint      NOT NULL,
    t_ns           bigint      NOT NULL,
    wall_time      timestamptz NOT NULL,
    ingested_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    cpu_percent    double precision,
    rss_mb         double precision,
    temperature_c  double precision,
    disk_free_mb   double precision,
    outbox_backlog bigint,
    outbox_dropped bigint,
    recorder       text,
    streams        jsonb,
    offload        jsonb,
    payload        jsonb       NOT NULL,
    UNIQUE (msg_id, wall_time)
) PARTITION BY RANGE (wall_time);

CREATE TABLE status (
    msg_id           text        NOT NULL,
    rig_id           text        NOT NULL,
    seq              bigint      NOT NULL,
    t_ns             bigint      NOT NULL,
    wall_time        timestamptz NOT NULL,
    ingested_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    state            text        NOT NULL,
    reason           text,
    software_version text,
    model_version    text,
    config_hash      text,
    recording        boolean,
    session          text,
    subject          text,
    payload          jsonb       NOT NULL,
    UNIQUE (msg_id, wall_time)
) PARTITION BY RANGE (wall_time);

CREATE INDEX ON me_events (rig_id, wall_time);
CREATE INDEX ON emotion_events (me_msg_id);
CREATE INDEX ON vitals (rig_id, wall_time);
CREATE INDEX ON markers (rig_id, wall_time);
CREATE INDEX ON health (rig_id, wall_time);
CREATE INDEX ON status (rig_id, wall_time);

-- What failed its JSON Schema (or could not be read at all): kept with the reason, never
-- dropped. Not partitioned: small, and kept until someone has looked. Idempotent on the
-- sha256 of topic and bytes, so a redelivered bad message is stored once.
CREATE TABLE quarantine (
    id          bigserial   PRIMARY KEY,
    digest      text        NOT NULL UNIQUE,
    topic       text        NOT NULL,
    raw         bytea       NOT NULL,
    reason      text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
