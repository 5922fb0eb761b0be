"""Declarative Feast objects: the feature contract between the stream, training and serving.

Names end in their kind (``*_fv``, ``*_push``, ``*_source``). ``ranker_v1`` is the versioned
FeatureService the model reads; a change to what the model consumes is a new service
(``ranker_v2``), never an edit of this one.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Int64

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64,
              description="An end user, keyed by the event's user_id")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64,
              description="A rankable item, keyed by the event's item_id")

# Offline rows (folders of parquet parts, paths relative to the data directory): the stream's
# sample exporter writes, for every labelled sample, the user's history as of the sample's
# event time and the item's category, so a point-in-time join through ``ranker_v1`` at a
# sample's time returns what the sample carries (docs/stream.md, "Offline store").
user_behavior_source = FileSource(
    name="user_behavior_source",
    path="offline/user_behavior",
    timestamp_field="event_timestamp",
)
user_behavior_push = PushSource(name="user_behavior_push", batch_source=user_behavior_source)

item_source = FileSource(
    name="item_source", path="offline/items", timestamp_field="event_timestamp"
)
item_push = PushSource(name="item_push", batch_source=item_source)

# The user's recent clicks, oldest first, and the bookkeeping that makes the consumer's
# read-append-write idempotent: the Kafka partition and offset of the last applied event.
user_behavior_fv = FeatureView(
    name="user_behavior_fv",
    entities=[user],
    ttl=timedelta(days=365),
    schema=[
        Field(name="hist_item_ids", dtype=Array(Int64)),
        Field(name="hist_cat_ids", dtype=Array(Int64)),
        Field(name="hist_ts_ms", dtype=Array(Int64)),
        Field(name="last_partition", dtype=Int64),
        Field(name="last_offset", dtype=Int64),
        # The row's own timestamp (µs), so the next writer can stamp strictly after it.
        Field(name="written_at_us", dtype=Int64),
    ],
    online=True,
    source=user_behavior_push,
)

item_fv = FeatureView(
    name="item_fv",
    entities=[item],
    ttl=timedelta(days=3650),
    schema=[Field(name="category_id", dtype=Int64)],
    online=True,
    source=item_push,
)

ranker_v1 = FeatureService(
    name="ranker_v1",
    features=[user_behavior_fv[["hist_item_ids", "hist_cat_ids"]], item_fv[["category_id"]]],
    description="DIN/DIEN ranker inputs: the user's click sequence, the candidate's category",
)

ALL_OBJECTS: list[Entity | PushSource | FeatureView | FeatureService] = [
    user, item, user_behavior_push, item_push, user_behavior_fv, item_fv, ranker_v1,
]
