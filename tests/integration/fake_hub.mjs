// fake_hub.mjs - a stand-in for the parts of the Hugging Face hub that `suggestd pull` talks to, on 127.0.0.1
// (node, no npm). Every repository serves the files of FILES_DIR (a tiny checkpoint + tokenizer files), plus a
// README.md and a folder entry that a pull must skip; *.safetensors and *.bin are LFS files (sha256 in the listing,
// resolve redirects to /_cdn/..., which honours Range).
//
//   GET /api/models/ORG/NAME/tree/main   the listing, as the hub's tree API answers
//   GET /ORG/NAME/resolve/main/FILE      small files directly; LFS files: 302 to /_cdn with X-Linked-Etag
//   GET /_log                            [{repo, file, route, range, status, bytes, auth}]   (for the test only)
//
// Repositories by name: test/gated needs "Authorization: Bearer hf_good" (else 401 GatedRepo); test/badhash lists a
// wrong sha256 for its weights; test/evil lists "../../escape.safetensors"; test/flaky* drop the connection halfway
// through the weights the first time; test/nothere and unknown names 404 RepoNotFound; Salesforce/codegen-350M-mono
// and test/* others are plain.
//
// usage: node fake_hub.mjs PORT_FILE FILES_DIR
import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const [portFile, filesDir] = process.argv.slice(2);
const files = {};
for (const name of fs.readdirSync(filesDir).sort()) {
    const data = fs.readFileSync(path.join(filesDir, name));
    files[name] = { data, lfs: /\.(safetensors|bin)$/.test(name),
                    sha256: crypto.createHash('sha256').update(data).digest('hex'),
                    oid: crypto.createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex') };
}
files['README.md'] = { data: Buffer.from('# tiny test model\n'), lfs: false };
files['README.md'].oid = crypto.createHash('sha1').update('x').digest('hex');

const log = [];
const dropped = new Set();
const known = (repo) => repo.startsWith('test/') && repo !== 'test/nothere' || repo === 'Salesforce/codegen-350M-mono';

function listing(repo) {
    const out = [{ type: 'directory', oid: 'f'.repeat(40), size: 0, path: 'onnx' }];
    for (const [name, f] of Object.entries(files)) {
        const e = { type: 'file', oid: f.oid, size: f.data.length, path: name };
        if (f.lfs) e.lfs = { oid: repo === 'test/badhash' ? '0'.repeat(64) : f.sha256, size: f.data.length,
                             pointerSize: 134 };
        out.push(e);
    }
    if (repo === 'test/evil') out.push({ type: 'file', oid: 'e'.repeat(40), size: 4, path: '../../escape.safetensors',
                                         lfs: { oid: 'e'.repeat(64), size: 4, pointerSize: 130 } });
    return out;
}

const send = (res, status, body, headers = {}) => {
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
    res.end(typeof body === 'string' ? body : JSON.stringify(body));
};

// Gated or unknown repositories answer like the hub does, with X-Error-Code saying which.
function refuse(req, res, repo, entry) {
    if (!known(repo)) {
        send(res, 404, { error: 'Repository not found' }, { 'X-Error-Code': 'RepoNotFound' });
        entry.status = 404;
        return true;
    }
    if (repo === 'test/gated' && req.headers.authorization !== 'Bearer hf_good') {
        send(res, 401, { error: 'Access to model test/gated is restricted.' }, { 'X-Error-Code': 'GatedRepo' });
        entry.status = 401;
        return true;
    }
    return false;
}

// /_cdn: the storage large files are redirected to; honours "Range: bytes=N-" and "bytes=N-M".
function serveBytes(req, res, repo, name, entry) {
    const data = files[name].data;
    let start = 0, end = data.length - 1, status = 200;
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range || '');
    if (m) {
        start = Number(m[1]);
        if (m[2]) end = Math.min(Number(m[2]), end);
        if (start >= data.length) {
            entry.status = 416;
            return send(res, 416, '', { 'Content-Range': `bytes */${data.length}` });
        }
        status = 206;
    }
    const body = data.subarray(start, end + 1);
    const headers = { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length,
                      'Accept-Ranges': 'bytes' };
    if (status === 206) headers['Content-Range'] = `bytes ${start}-${end}/${data.length}`;
    res.writeHead(status, headers);
    entry.status = status;
    const key = `${repo}/${name}`;
    if (repo.startsWith('test/flaky') && files[name].lfs && !dropped.has(key)) {
        dropped.add(key); // the first transfer dies halfway, as a dropped connection would
        const half = body.subarray(0, Math.floor(body.length / 2));
        entry.bytes = half.length;
        return res.write(half, () => setTimeout(() => res.socket.destroy(), 50));
    }
    entry.bytes = body.length;
    res.end(body);
}

const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const p = decodeURIComponent(url.pathname);
    const entry = { route: '', repo: '', file: '', range: req.headers.range || '', status: 0, bytes: 0,
                    auth: req.headers.authorization || '' };
    if (p === '/_log') return send(res, 200, log);
    log.push(entry);
    let m;
    if ((m = /^\/api\/models\/([^/]+\/[^/]+)\/tree\/(.+)$/.exec(p))) {
        Object.assign(entry, { route: 'tree', repo: m[1] });
        if (refuse(req, res, m[1], entry)) return;
        if (m[2] !== 'main') return send(res, 404, { error: 'Invalid rev id' }, { 'X-Error-Code': 'RevisionNotFound' });
        entry.status = 200;
        return send(res, 200, listing(m[1]));
    }
    if ((m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(p))) {
        Object.assign(entry, { route: 'resolve', repo: m[1], file: m[3] });
        if (refuse(req, res, m[1], entry)) return;
        const f = files[m[3]];
        if (!f) return send(res, 404, { error: 'Entry not found' }, { 'X-Error-Code': 'EntryNotFound' });
        if (f.lfs) {
            entry.status = 302;
            res.writeHead(302, { Location: `/_cdn/${m[1]}/${m[3]}`, 'X-Linked-Etag': `"${f.sha256}"`,
                                 'X-Linked-Size': String(f.data.length), 'X-Repo-Commit': 'c'.repeat(40) });
            return res.end();
        }
        return serveBytes(req, res, m[1], m[3], entry);
    }
    if ((m = /^\/_cdn\/([^/]+\/[^/]+)\/(.+)$/.exec(p)) && files[m[2]]) {
        Object.assign(entry, { route: 'cdn', repo: m[1], file: m[2] });
        return serveBytes(req, res, m[1], m[2], entry);
    }
    send(res, 404, { error: 'not found' });
});

server.listen(0, '127.0.0.1', () => fs.writeFileSync(portFile, String(server.address().port)));
