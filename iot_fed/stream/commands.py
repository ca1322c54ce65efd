"""CLI: ``iot-fed stream``, ``iot-fed ingest``, ``iot-fed consume``,
``iot-fed kafka status|create-topics``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from iot_fed.config import get_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="replay clean readings into Kafka (the producer)")
    p.add_argument("--path", type=Path, help="clean readings parquet (default: intel_lab clean)")
    p.add_argument("--topic", help="default: settings.kafka_topic")
    p.add_argument("--rate", type=float, help="records/s (default settings.producer_rate; 0 = max)")
    p.add_argument("--speedup", type=float, help="replay at the data's own timing times K")
    p.add_argument("--loop", action="store_true", help="replay forever (epoch/ts shifted per loop)")
    p.add_argument("--limit", type=int, help="stop after N records")
    p.add_argument("--progress", type=float, default=10.0, help="seconds between progress logs")
    p.add_argument(
        "--outage-budget",
        type=float,
        help="seconds to keep retrying while Kafka accepts nothing (0 = forever; default "
        "forever with --loop, else 300); then exit 1 with the count not delivered",
    )
    p.set_defaults(func=cmd_stream)

    g = sub.add_parser(
        "ingest",
        help="land readings from Kafka in MongoDB: one member of the ingestion consumer group",
        description="Runs until SIGINT/SIGTERM. Start N of them (on any hosts) to share the "
        "topic's partitions; make run supervises IOT_FED_INGESTERS of them.",
    )
    g.add_argument("--name", help="member name in logs and progress (default host-pid)")
    g.add_argument("--group", help="default: settings.kafka_consumer_group")
    g.add_argument("--topic", help="default: settings.kafka_topic")
    g.add_argument(
        "--idle-exit", type=float, default=0.0, help="exit after N s without a message (0: never)"
    )
    g.set_defaults(func=cmd_ingest)

    c = sub.add_parser(
        "consume",
        help="print messages as they are on the wire (key, value) and validate them",
        description="Prints each message as `<partition>@<offset> key=<key> <value>`, the "
        "value exactly as on the wire (re-producing it is accepted); --decoded prints the "
        "decoded readings instead.",
    )
    c.add_argument("--topic", help="default: settings.kafka_topic")
    c.add_argument("--max", type=int, default=10, help="stop after N messages (0 = forever)")
    c.add_argument("--from-beginning", action="store_true", help="ignore committed offsets")
    c.add_argument("--group", help="consumer group (default: a throwaway one; nothing committed)")
    c.add_argument("--timeout", type=float, default=10.0, help="stop after N idle seconds")
    c.add_argument("--quiet", action="store_true", help="only the summary")
    c.add_argument(
        "--decoded", action="store_true", help="print decoded readings, not the wire value"
    )
    c.set_defaults(func=cmd_consume)

    k = sub.add_parser("kafka", help="Kafka topics and consumer-group offsets")
    ksub = k.add_subparsers(dest="kafka_command", required=True)
    s = ksub.add_parser("status", help="topics, partitions, end offsets, group lag")
    s.add_argument("--group", help="default: settings.kafka_consumer_group")
    s.add_argument("--topic", action="append", help="only these topics (repeatable)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_kafka_status)
    t = ksub.add_parser("create-topics", help="create the data and DLQ topics if missing")
    t.set_defaults(func=cmd_kafka_create)


def cmd_stream(args: argparse.Namespace) -> int:
    from iot_fed.stream.producer import ReplayData, StopFlag, load_readings, replay

    settings = get_settings()
    stop = StopFlag()
    restore = stop.install()
    try:
        data = ReplayData.from_frame(load_readings(args.path, settings))
        stats = replay(
            settings,
            data,
            topic=args.topic,
            rate=args.rate,
            speedup=args.speedup,
            loop=args.loop,
            limit=args.limit,
            stop=stop,
            progress_interval_s=args.progress,
            outage_budget_s=args.outage_budget,
        )
    finally:
        restore()
    print(json.dumps(stats.as_dict()), flush=True)
    if not stats.ok:
        print(
            f"iot-fed stream: {stats.failed} of {stats.sent} readings NOT delivered to Kafka at "
            f"{settings.kafka_bootstrap} ({stats.undelivered} still queued"
            + (", gave up after the outage budget" if stats.gave_up else "")
            + ")",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    import os
    import socket

    from pymongo.errors import PyMongoError

    from iot_fed.store import StoreConnectionError, connect, ensure_database
    from iot_fed.stream.group_ingest import GroupIngester
    from iot_fed.stream.ingest_result import IngestError
    from iot_fed.stream.producer import StopFlag

    settings = get_settings()
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    stop = StopFlag()
    restore = stop.install()
    try:
        db = connect(settings.mongodb_uri, settings.mongodb_database, settings.mongodb_timeout_s)
        ensure_database(db)
        member = GroupIngester(settings, db, name=name, group=args.group, topic=args.topic)
    except (IngestError, StoreConnectionError, PyMongoError) as exc:
        print(f"iot-fed ingest: cannot start: {exc}", file=sys.stderr)
        return 1
    print(
        f"iot-fed ingest: {name} joins group {member.group} on {member.topic} "
        f"({settings.kafka_bootstrap} -> {settings.mongodb_database})",
        flush=True,
    )
    try:
        stats = member.run(lambda: bool(stop), idle_exit_s=args.idle_exit)
    finally:
        member.close()
        restore()
    print(json.dumps(stats.__dict__), flush=True)
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    from confluent_kafka import Consumer, KafkaError

    from iot_fed.stream.kafka_config import consumer_config
    from iot_fed.stream.messages import decode_value

    settings = get_settings()
    topic = args.topic or settings.kafka_topic
    group = args.group or f"iot_fed_consume_{int(time.time() * 1000)}"
    conf = consumer_config(settings, group, **{"enable.partition.eof": False})
    if args.from_beginning or not args.group:
        conf["auto.offset.reset"] = "earliest"
    consumer = Consumer(conf)

    def on_assign(c: Consumer, parts: list) -> None:
        if args.from_beginning:
            from confluent_kafka import OFFSET_BEGINNING

            for tp in parts:
                tp.offset = OFFSET_BEGINNING
        c.assign(parts)

    consumer.subscribe([topic], on_assign=on_assign)
    n, bad, reasons = 0, 0, Counter[str]()
    last = time.monotonic()
    try:
        while args.max <= 0 or n < args.max:
            msg = consumer.poll(0.5)
            if msg is None:
                if time.monotonic() - last > args.timeout:
                    break
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    print(f"error: {msg.error()}", file=sys.stderr)
                continue
            last = time.monotonic()
            n += 1
            reading, reason = decode_value(msg.value(), settings.kafka_max_message_bytes, msg.key())
            where = f"{msg.partition()}@{msg.offset()}"
            if reason is not None:
                bad += 1
                reasons[reason] += 1
                if not args.quiet:
                    print(f"INVALID {where} key={msg.key()!r}: {reason}")
            elif args.decoded and not args.quiet:
                r = dict(reading, ts=reading["ts"].isoformat())
                print(f"{where} key={msg.key().decode()} decoded {json.dumps(r)}")
            elif not args.quiet:  # the value exactly as on the wire
                print(f"{where} key={msg.key().decode()} {msg.value().decode()}")
            if args.group:
                consumer.store_offsets(msg)
        if args.group and n:
            consumer.commit(asynchronous=False)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    print(json.dumps({"consumed": n, "valid": n - bad, "invalid": bad, "reasons": reasons}))
    return 0


def cmd_kafka_status(args: argparse.Namespace) -> int:
    from iot_fed.stream.admin import status_dict, topic_status

    settings = get_settings()
    group = args.group or settings.kafka_consumer_group
    statuses = topic_status(settings, args.topic, group)
    if args.json:
        print(json.dumps(status_dict(statuses, group), indent=2))
        return 0
    print(f"bootstrap {settings.kafka_bootstrap}  group {group}")
    print(f"{'topic':<28}{'part':>5}{'low':>10}{'high':>10}{'committed':>11}{'lag':>9}")
    for s in statuses:
        for p in s.partitions:
            c = "-" if p.committed is None else p.committed
            print(f"{s.topic:<28}{p.partition:>5}{p.low:>10}{p.high:>10}{c:>11}{p.lag:>9}")
    return 0


def cmd_kafka_create(args: argparse.Namespace) -> int:
    from iot_fed.stream.admin import ensure_topics

    created = ensure_topics(get_settings())
    print("created: " + (", ".join(created) or "nothing (topics exist)"))
    return 0
