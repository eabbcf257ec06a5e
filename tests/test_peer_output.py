"""A peer's output without line ends (progress bars rewrite one line with \r; some write none at all) reaches
rank 0 in bounded pieces: the peer holds back no more than a line's limit, however much it writes."""

import subprocess
import sys
import threading

import pytest

from raympi.channel import ChannelListener, new_key
from raympi.messages import Output

MIB = 1 << 20
WRITTEN_MIB = 50
PEER = """
import os, sys
from raympi.channel import Channel
from raympi.peer import OutputForwarder

channel = Channel.connect(("127.0.0.1", int(sys.argv[1])), bytes.fromhex(sys.argv[2]))
forwarder = OutputForwarder(1, "stdout", channel)
chunk = (sys.argv[3].encode() * (1 << 20))[:1 << 20]
for _ in range({written}):
    os.write(1, chunk)
forwarder.drain()
channel.close()
with open("/proc/self/status") as status:
    print(next(line for line in status if line.startswith("VmHWM")).split()[1])  # peak RSS, KiB
"""


@pytest.mark.parametrize("pattern", ["x", "progress 42%\r"], ids=["no line end", "carriage returns"])
def test_output_without_newlines_arrives_whole_and_the_peer_stays_small(pattern):
    key = new_key()
    received = {"bytes": 0, "largest": 0}
    ended = threading.Event()

    def rank0(channel, _peer_ip):
        while isinstance(message := channel.receive(), Output):
            received["bytes"] += len(message.text.replace("\r", ""))
            received["largest"] = max(received["largest"], len(message.text))
        ended.set()

    listener = ChannelListener("127.0.0.1", key, rank0)
    try:
        peer = subprocess.run([sys.executable, "-c", PEER.format(written=WRITTEN_MIB), str(listener.address[1]),
                               key.hex(), pattern], capture_output=True, text=True, timeout=120)
        ended.wait(timeout=60)
    finally:
        listener.close()
    assert peer.returncode == 0, peer.stderr
    expected = len((pattern * MIB)[:MIB].replace("\r", "")) * WRITTEN_MIB
    assert received["bytes"] == expected, "every byte written arrives"
    assert received["largest"] <= 2 * 64 * 1024, "sent in pieces of a bounded size"
    peak_mib = int(peer.stdout.split()[-1]) / 1024
    assert peak_mib < 60, f"the peer peaked at {peak_mib:.0f} MiB for {WRITTEN_MIB} MiB written without newlines"
