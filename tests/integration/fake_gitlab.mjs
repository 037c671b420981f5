// fake_gitlab.mjs - a stand-in for the parts of GitLab that suggestd's auth talks to, on 127.0.0.1 (node, no npm).
//
//   GET /api/v4/ml/ai-assist        by the bearer's prefix: allowed-* 200 {"user_is_allowed":true},
//                                   denied-* 200 false, invalid-* 401, error-* 500, badjson-* 200 "{oops",
//                                   slow-* 3 s then allowed, sf-* 400 ms then allowed, anything else 401
//   GET /.well-known/openid-configuration, GET /oauth/discovery/keys   OIDC discovery and the JWKS
//   GET /_counts                    {"<token>": calls, ..., "_discovery": n, "_jwks": n}   (for the test only)
//   GET /_jwt?kind=K&sub=S          an RS256 JWT: valid, expired, wrongaud, wrongkey, none, hs256, future, newkid
//   GET /_rotate                    publish the second key (kid "k2") too
//
// usage: node fake_gitlab.mjs PORT_FILE   (listens on a free port and writes it to PORT_FILE)
import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs';

const counts = {};
const bump = (k) => { counts[k] = (counts[k] || 0) + 1; };
const key1 = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const key2 = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const other = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
let rotated = false;
const jwk = (k, kid) => ({ ...k.publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' });
const b64 = (x) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');

function jwt(kind, sub) {
    const now = Math.floor(Date.now() / 1000);
    const claims = { iss: 'fake', sub, aud: 'gitlab-code-suggestions', iat: now, nbf: now - 10, exp: now + 3600 };
    let hdr = { alg: 'RS256', typ: 'JWT', kid: 'k1' }, signer = key1.privateKey;
    if (kind === 'expired') { claims.exp = now - 3600; claims.nbf = now - 7200; }
    if (kind === 'wrongaud') claims.aud = 'someone-else';
    if (kind === 'future') claims.nbf = now + 3600;
    if (kind === 'wrongkey') signer = other.privateKey;
    if (kind === 'newkid') { hdr.kid = 'k2'; signer = key2.privateKey; }
    if (kind === 'none') return b64({ alg: 'none', typ: 'JWT' }) + '.' + b64(claims) + '.';
    if (kind === 'hs256') {
        hdr = { alg: 'HS256', typ: 'JWT', kid: 'k1' };
        const input = b64(hdr) + '.' + b64(claims);
        const pem = key1.publicKey.export({ type: 'spki', format: 'pem' });
        return input + '.' + crypto.createHmac('sha256', pem).update(input).digest('base64url');
    }
    const input = b64(hdr) + '.' + b64(claims);
    return input + '.' + crypto.sign('sha256', Buffer.from(input), signer).toString('base64url');
}

const send = (res, status, body, type = 'application/json') => {
    res.writeHead(status, { 'Content-Type': type });
    res.end(typeof body === 'string' ? body : JSON.stringify(body));
};

const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const base = `http://127.0.0.1:${server.address().port}`;
    if (url.pathname === '/api/v4/ml/ai-assist') {
        const m = /^Bearer (.+)$/.exec(req.headers.authorization || '');
        const tok = m ? m[1] : '';
        bump(tok);
        const allowed = () => send(res, 200, { user_is_allowed: true, third_party_ai_features_enabled: true });
        if (tok.startsWith('allowed-')) return allowed();
        if (tok.startsWith('denied-')) return send(res, 200, { user_is_allowed: false });
        if (tok.startsWith('error-')) return send(res, 500, { message: '500 Internal Server Error' });
        if (tok.startsWith('badjson-')) return send(res, 200, '{oops');
        if (tok.startsWith('slow-')) return setTimeout(allowed, 3000);
        if (tok.startsWith('sf-')) return setTimeout(allowed, 400);
        return send(res, 401, { message: '401 Unauthorized' });
    }
    if (url.pathname === '/.well-known/openid-configuration') {
        bump('_discovery');
        return send(res, 200, { issuer: base, jwks_uri: `${base}/oauth/discovery/keys` });
    }
    if (url.pathname === '/oauth/discovery/keys') {
        bump('_jwks');
        const keys = [jwk(key1, 'k1')];
        if (rotated) keys.push(jwk(key2, 'k2'));
        return send(res, 200, { keys });
    }
    if (url.pathname === '/_counts') return send(res, 200, counts);
    if (url.pathname === '/_jwt') return send(res, 200, jwt(url.searchParams.get('kind') || 'valid',
                                                         url.searchParams.get('sub') || 'user-1'), 'text/plain');
    if (url.pathname === '/_rotate') { rotated = true; return send(res, 200, {}); }
    send(res, 404, { message: '404 Not Found' });
});
server.listen(0, '127.0.0.1', () => fs.writeFileSync(process.argv[2], String(server.address().port)));
