// A data-channel benchmark peer on libdatachannel (node-datachannel), speaking the line
// protocol of bench/dc_run.py: the sender prints its offer (after gathering, candidates
// inside) as one JSON line and reads the answer; the receiver reads the offer and prints the
// answer. The sender sends BYTES in MESSAGE-sized binary messages on a reliable ordered
// channel, keeping at most 4 MiB buffered; the receiver answers "done" when it has them all
// and prints {"bytes","seconds"} (first byte to last).
//
//   node ldc-peer.mjs send|recv BYTES MESSAGE
import nodeDataChannel from 'node-datachannel';
import readline from 'node:readline';

const [role, bytesArg, messageArg] = process.argv.slice(2);
const total = Number(bytesArg);
const size = Number(messageArg || 65536);
const lines = readline.createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once('line', resolve));
setTimeout(() => { console.error('ldc-peer: timed out'); process.exit(1); }, 120_000).unref();

const pc = new nodeDataChannel.PeerConnection(role, { iceServers: [] });
const gathered = new Promise((resolve) => pc.onGatheringStateChange((s) => s === 'complete' && resolve()));
const print = () => console.log(JSON.stringify(pc.localDescription()));

if (role === 'send') {
  const dc = pc.createDataChannel('bench');
  const chunk = Buffer.alloc(size, 0x5a);
  let sent = 0;
  const pump = () => {
    while (sent < total && dc.bufferedAmount() < 4 << 20) {
      const n = Math.min(size, total - sent);
      dc.sendMessageBinary(n === size ? chunk : chunk.subarray(0, n));
      sent += n;
    }
  };
  dc.setBufferedAmountLowThreshold(1 << 20);
  dc.onBufferedAmountLow(pump);
  dc.onOpen(pump);
  dc.onMessage((m) => {
    if (String(m) === 'done') {
      console.error(`ldc-peer: sender done after ${sent} bytes`);
      pc.close();
      process.exit(0);
    }
  });
  await gathered;
  print();
  const answer = JSON.parse(await nextLine());
  pc.setRemoteDescription(answer.sdp, answer.type);
} else {
  let received = 0;
  let first = 0;
  pc.onDataChannel((dc) => {
    dc.onMessage((m) => {
      const now = performance.now();
      if (!first) first = now;
      received += m.length ?? m.byteLength;
      if (received >= total) {
        dc.sendMessage('done');
        const seconds = (now - first) / 1000;
        setTimeout(() => {
          console.log(JSON.stringify({ bytes: received, seconds }));
          pc.close();
          process.exit(0);
        }, 300);
      }
    });
  });
  const offer = JSON.parse(await nextLine());
  pc.setRemoteDescription(offer.sdp, offer.type);
  await gathered;
  print();
}
