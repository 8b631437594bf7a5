"""The study's fleet: every rig's results in one PostgreSQL, every recording home.

``fleet.ingest`` consumes ``mmme/v1/+/...`` through MQTT 5 shared subscriptions into
PostgreSQL; ``fleet.offload`` ships finished MCAP segments to the study server over
SSH with rsync; ``fleet.bench`` measures the two together on one machine.
"""
