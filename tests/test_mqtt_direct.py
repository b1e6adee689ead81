"""bulletd.mqtt_direct on a real broker: messages reach the handler in order without aiomqtt's
queue, a handler that raises loses nothing else and keeps the connection, and `messages` still
ends with MqttError when the broker goes away (the reconnect loops rely on it).

    pytest tests/test_mqtt_direct.py -q
"""
import asyncio
import logging

import aiomqtt
import pytest

from bulletd.mqtt_direct import direct_queue


async def test_handler_gets_every_message_and_a_raising_handler_keeps_the_connection(broker, caplog):
    got: list[bytes] = []

    def handler(msg):
        if msg.payload == b"boom":
            raise RuntimeError("handler bug")
        got.append(msg.payload)

    async with aiomqtt.Client(broker.host, broker.port, identifier="direct-sub",
                              queue_type=direct_queue(handler)) as sub, \
            aiomqtt.Client(broker.host, broker.port, identifier="direct-pub") as pub:
        await sub.subscribe("t/#", qos=1)
        with caplog.at_level(logging.ERROR, logger="bulletd.mqtt"):
            for p in (b"1", b"boom", b"2", b"3"):
                await pub.publish("t/x", p, qos=1)
            for _ in range(100):
                if len(got) == 3:
                    break
                await asyncio.sleep(0.02)
        assert got == [b"1", b"2", b"3"]
        assert "handling an incoming MQTT message failed" in caplog.text and "handler bug" in caplog.text
        # still connected: a new subscription round trip works
        await sub.subscribe("u", qos=1)
        await pub.publish("u", b"4", qos=1)
        for _ in range(100):
            if len(got) == 4:
                break
            await asyncio.sleep(0.02)
        assert got[-1] == b"4"


async def test_messages_iterator_still_reports_a_lost_connection(broker):
    async with aiomqtt.Client(broker.host, broker.port, identifier="direct-lost",
                              queue_type=direct_queue(lambda m: None)) as sub:
        await sub.subscribe("t", qos=1)

        async def drain():
            async for _ in sub.messages:
                pytest.fail("the direct queue must not put messages in the iterator")

        task = asyncio.create_task(drain())
        await asyncio.sleep(0.1)
        broker.stop(kill=True)
        with pytest.raises(aiomqtt.MqttError):
            await asyncio.wait_for(task, 10)
