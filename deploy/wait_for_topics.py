"""Init container of every service that publishes or consumes: wait for the topics.

The files-topics Job creates them with their partition counts; a service started
before it would create missing topics with FILES_TOPIC_PARTITIONS instead.
"""

from __future__ import annotations

import asyncio
import os
import sys

from aiokafka.admin import AIOKafkaAdminClient

from shared.contracts import topics


async def missing(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        wanted = {*topics.ALL, *(topics.dead_letters(t) for t in topics.ALL)}
        return wanted - set(await admin.list_topics())
    finally:
        await admin.close()


async def main() -> None:
    bootstrap = os.environ["FILES_KAFKA_BOOTSTRAP"]
    while True:
        try:
            absent = await missing(bootstrap)
        except Exception as error:  # the broker is not up yet
            print(f"waiting for Kafka at {bootstrap}: {error!r}", file=sys.stderr, flush=True)
        else:
            if not absent:
                return
            print(f"waiting for topics: {', '.join(sorted(absent))}", file=sys.stderr, flush=True)
        await asyncio.sleep(2)


if __name__ == "__main__":
    asyncio.run(main())
