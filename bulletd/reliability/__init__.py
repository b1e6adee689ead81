"""Reliability runs against real Mosquitto and bulletd processes (docs/RELIABILITY.md). None of
this is imported by the product code.

    bulletd.reliability.harness     broker and daemon processes, requesters that count every final reply
    bulletd.reliability.scenarios   load, fleet, broker and daemon SIGKILL, partition, delay, netem, soak
    python -m bulletd.reliability   all of them, plus the sanitizer and fuzzing steps, in one run
"""
