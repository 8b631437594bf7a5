-- The queries researchers need, as views (documented in README "Fleet").

-- Which boot of its rig a message comes from: msg_id is <rig_id>.<boot_id>.<seq>, and a
-- rig's t_ns (CLOCK_MONOTONIC) only compares within one boot.
CREATE FUNCTION mmme_boot(msg_id text, rig_id text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT split_part(substr(msg_id, length(rig_id) + 2), '.', 1) $$;

-- Per subject and session: every expression, its fused emotion, and the vitals around
-- its apex (mean over +-10 s on the rig's own clock, same boot). Subject and session are
-- the rig's, from its last status at or before the expression that carried them
-- (set by the set_session command); NULL when none was ever set.
CREATE VIEW expression_timeline AS
SELECT s.subject, s.session, e.rig_id, e.msg_id, e.wall_time, e.kind,
       e.onset_ns, e.apex_ns, e.offset_ns, e.regions, e.aus, e.confidence,
       f.msg_id AS emotion_msg_id, f.predicted, f.predicted_emotion, f.composite,
       f.contrib_visual, f.contrib_eeg, f.contrib_peripheral, f.model_version,
       v.hr_bpm, v.rr_bpm, v.eda_us, v.skt_c, v.vitals_n
FROM me_events e
LEFT JOIN LATERAL (
    SELECT st.session, st.subject FROM status st
    WHERE st.rig_id = e.rig_id AND st.wall_time <= e.wall_time AND st.session IS NOT NULL
    ORDER BY st.wall_time DESC LIMIT 1) s ON true
LEFT JOIN emotion_events f ON f.me_msg_id = e.msg_id
LEFT JOIN LATERAL (
    SELECT avg(x.hr_bpm) AS hr_bpm, avg(x.rr_bpm) AS rr_bpm, avg(x.eda_us) AS eda_us,
           avg(x.skt_c) AS skt_c, count(*) AS vitals_n
    FROM vitals x
    WHERE x.rig_id = e.rig_id
      AND x.wall_time BETWEEN e.wall_time - interval '2 minutes' AND e.wall_time + interval '1 minute'
      AND mmme_boot(x.msg_id, x.rig_id) = mmme_boot(e.msg_id, e.rig_id)
      AND x.t_ns BETWEEN e.apex_ns - 10000000000 AND e.apex_ns + 10000000000) v ON true;

-- Per rig and stream, each health message: rate, drops since the previous one of the
-- same boot (the rig's counters are cumulative per run), sync uncertainty and quality.
CREATE VIEW rig_stream_health AS
SELECT h.rig_id, mmme_boot(h.msg_id, h.rig_id) AS boot, h.seq, h.wall_time,
       s.key AS stream,
       (s.value->>'rate_hz')::double precision AS rate_hz,
       (s.value->>'dropped')::bigint AS dropped_total,
       greatest((s.value->>'dropped')::bigint - coalesce(lag((s.value->>'dropped')::bigint)
           OVER (PARTITION BY h.rig_id, mmme_boot(h.msg_id, h.rig_id), s.key
                 ORDER BY h.seq), 0), 0) AS dropped_new,
       (s.value->>'sync_uncertainty_ms')::double precision AS sync_uncertainty_ms,
       s.value->>'sync_quality' AS sync_quality,
       (s.value->>'flowing')::boolean AS flowing
FROM health h CROSS JOIN LATERAL jsonb_each(h.streams) s;

-- Per rig and stream, per hour: drops and sync uncertainty over time.
CREATE VIEW rig_drops_hourly AS
SELECT rig_id, stream, date_trunc('hour', wall_time) AS hour,
       sum(dropped_new) AS dropped, count(*) AS health_n,
       avg(rate_hz) AS rate_hz_mean,
       avg(sync_uncertainty_ms) AS sync_uncertainty_ms_mean,
       max(sync_uncertainty_ms) AS sync_uncertainty_ms_max,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY sync_uncertainty_ms)
           AS sync_uncertainty_ms_p99,
       bool_and(flowing) AS always_flowing
FROM rig_stream_health
GROUP BY rig_id, stream, date_trunc('hour', wall_time);
