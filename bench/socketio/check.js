// A check of the Socket.IO side with the real client (socket.io-client):
// a subscriber on one process gets a push made on another, through Redis.
//   node check.js PUB_PORT SUB_PORT     (exits 0 when the push arrived)
'use strict';

const { io } = require('socket.io-client');

const [pubPort, subPort] = process.argv.slice(2).map(Number);
const opts = (uid) => ({ transports: ['websocket'], auth: { uid, password: 'pw' }, reconnection: false });
const fail = (why) => {
  console.error(`check: ${why}`);
  process.exit(1);
};
setTimeout(() => fail('no delivery within 10 s'), 10000).unref();

const sub = io(`http://127.0.0.1:${subPort}`, opts('u0'));
sub.on('connect_error', (e) => fail(`subscriber: ${e.message}`));
sub.on('connect', () => {
  sub.emit('join', 'bench', () => {
    const pub = io(`http://127.0.0.1:${pubPort}`, opts('upub'));
    pub.on('connect_error', (e) => fail(`publisher: ${e.message}`));
    let got = 0;
    sub.on('m', (body) => {
      got += 1;
      if (got === 2) {
        console.log(`check: both pushes crossed (last: ${body})`);
        process.exit(0);
      }
    });
    pub.on('connect', () => {
      pub.emit('push', 'u0', 'to the user');
      pub.emit('push', 'bench', 'to the room');
    });
  });
});
