// Replays recorded server frames through DashboardState; prints the resulting state as JSON.
// Usage: node tests/web/replay.mjs recording.json
// recording.json: {"<name>": {"frames": [{"text": "..."} | {"b64": "..."}]}, ...}
// output: {"<name>": {"data", "seq", "version", "epoch", "outcomes": {outcome: count}}, ...}

import { readFileSync } from "node:fs";

import { DashboardState, decodeFrame } from "../../python/dashboard_server/server/web/dashboard-protocol.js";

const recording = JSON.parse(readFileSync(process.argv[2], "utf8"));
const out = {};
for (const [name, { frames }] of Object.entries(recording)) {
  const state = new DashboardState();
  const outcomes = {};
  for (const frame of frames) {
    const data = frame.text !== undefined ? frame.text : new Uint8Array(Buffer.from(frame.b64, "base64"));
    const outcome = state.apply(decodeFrame(data));
    outcomes[outcome] = (outcomes[outcome] || 0) + 1;
  }
  out[name] = { data: state.data, seq: state.seq, version: state.version, epoch: state.epoch, outcomes };
}
process.stdout.write(JSON.stringify(out));
