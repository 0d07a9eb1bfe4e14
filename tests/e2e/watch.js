// Watches one match with socket.io-client, the frontend's own library, and prints each
// received event as one JSON line: {"event": name, "data": ...}. Exits after `complete`.
// Usage: node watch.js <base URL> <match id> <websocket|polling>
const { io } = require("socket.io-client");

const [baseUrl, matchId, mode] = process.argv.slice(2);
const options = mode === "websocket" ? { transports: ["websocket"] } : {};
const socket = io(baseUrl, { ...options, reconnection: false });
const print = (event, data) => process.stdout.write(JSON.stringify({ event, data }) + "\n");

socket.on("connect", () => {
  socket.emit("joinMatch", matchId, (ack) => print("ack", ack));
});
for (const name of ["joined", "progress", "matchEvent", "trackingUpdate"]) {
  socket.on(name, (data) => print(name, data));
}
socket.on("complete", (data) => {
  print("complete", { ...data, transport: socket.io.engine.transport.name });
  socket.close();
});
socket.on("connect_error", (error) => {
  process.stderr.write(`connect_error: ${error.message}\n`);
  process.exit(1);
});
