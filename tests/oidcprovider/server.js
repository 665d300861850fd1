// oidc-provider on 127.0.0.1 for the real-server tests.
//
// Usage: node server.js CONFIG.json
//
// The configuration comes from the Go test (see oidcprovider.go): the
// clients, the mutual-TLS proxy's URL and its shared secret, the token
// lifetime, whether DPoP proofs must carry a nonce. The server listens on an ephemeral loopback port, builds the
// provider with issuer http://127.0.0.1:<port>, and prints one line
//
//	LISTENING {"issuer": "http://127.0.0.1:<port>"}
//
// on stdout. It exits when its stdin closes, so it never outlives the test.
//
// Refresh tokens rotate on every use (rotateRefreshToken), and
// oidc-provider revokes the whole grant when a spent one comes back. POST
// /test/refresh-token (with the proxy secret) stands for a user's sign in:
// it creates a grant for {clientId, accountId, scope} and answers its
// first refresh token, so the Go tests need no browser.
//
// The sign-in flows run for real, with two stand-ins for the user: GET
// /interaction/<uid> is the login and consent page, which signs in the
// account named by the login_hint of the authorization request ("peter"
// without one) and grants what the client asked for; POST /test/device
// (with the proxy secret) is the user entering a user code on the device
// flow's verification page: {userCode, accountId} approves, {userCode,
// deny: true} refuses.
//
// TLS is terminated in front of it by the Go test's proxy, which passes the
// client certificate (PEM, URL-encoded) in x-client-cert, whether it chains
// to the test CA in x-client-cert-verified, and its subject DN in
// x-client-cert-dn. Those headers are believed only with x-proxy-secret,
// so a request straight to node cannot claim a certificate.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));

function fromProxy(ctx) {
  const secret = ctx.get('x-proxy-secret');
  return secret !== '' && secret === config.proxySecret;
}

function getCertificate(ctx) {
  if (!fromProxy(ctx)) return undefined;
  const pem = ctx.get('x-client-cert');
  return pem ? decodeURIComponent(pem) : undefined;
}

const signingKey = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey
  .export({ format: 'jwk' });

let handler = (req, res) => { res.statusCode = 503; res.end(); };
let seed = null;
let device = null;
let interact = null;
const failed = (what, res) => (err) => { console.error(what, err); res.statusCode = 500; res.end(); };
const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/test/refresh-token' && seed) {
    seed(req, res).catch(failed('seed', res));
    return;
  }
  if (req.method === 'POST' && req.url === '/test/device' && device) {
    device(req, res).catch(failed('device', res));
    return;
  }
  if (req.method === 'GET' && req.url.startsWith('/interaction/') && interact) {
    interact(req, res).catch(failed('interaction', res));
    return;
  }
  handler(req, res);
});
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const discovery = {};
  if (config.mtlsURL) {
    discovery.mtls_endpoint_aliases = {
      token_endpoint: `${config.mtlsURL}/token`,
      introspection_endpoint: `${config.mtlsURL}/token/introspection`,
    };
  }
  const provider = new Provider(issuer, {
    clients: config.clients,
    clientDefaults: { id_token_signed_response_alg: 'ES256', grant_types: ['client_credentials'], response_types: [] },
    jwks: { keys: [{ ...signingKey, kid: 'signing', alg: 'ES256', use: 'sig' }] },
    clientAuthMethods: [
      'client_secret_basic', 'client_secret_post', 'private_key_jwt',
      'tls_client_auth', 'self_signed_tls_client_auth',
      'none', // public clients, for the refresh token tests
    ],
    discovery,
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    features: {
      deviceFlow: { enabled: true },
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      // Nonces are kept by HMAC over the time step (60 s in
      // oidc-provider); required on every proof when the test asks.
      dPoP: {
        enabled: true,
        nonceSecret: crypto.randomBytes(32),
        requireNonce: () => config.requireDPoPNonce === true,
      },
      mTLS: {
        enabled: true,
        certificateBoundAccessTokens: true,
        tlsClientAuth: true,
        selfSignedTlsClientAuth: true,
        getCertificate,
        certificateAuthorized: (ctx) => fromProxy(ctx) && ctx.get('x-client-cert-verified') === 'SUCCESS',
        certificateSubjectMatches: (ctx, property, expected) => property === 'tls_client_auth_subject_dn'
          && fromProxy(ctx) && ctx.get('x-client-cert-dn') === expected,
      },
    },
    ttl: { ClientCredentials: config.tokenTTL || 600, AccessToken: config.tokenTTL || 600 },
    rotateRefreshToken: true,
    findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  });
  seed = async (req, res) => {
    if (!config.proxySecret || req.headers['x-proxy-secret'] !== config.proxySecret) {
      res.statusCode = 403;
      res.end();
      return;
    }
    let body = '';
    for await (const chunk of req) body += chunk;
    const { clientId, accountId, scope } = JSON.parse(body);
    const client = await provider.Client.find(clientId);
    if (!client) {
      res.statusCode = 404;
      res.end();
      return;
    }
    const grant = new provider.Grant({ accountId, clientId });
    grant.addOIDCScope(scope);
    const grantId = await grant.save();
    const refreshToken = new provider.RefreshToken({
      accountId, client, grantId, scope, gty: 'authorization_code', authTime: Math.floor(Date.now() / 1000),
    });
    const value = await refreshToken.save();
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ refresh_token: value }));
  };
  const readJSON = async (req) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    return JSON.parse(body);
  };
  device = async (req, res) => {
    if (!config.proxySecret || req.headers['x-proxy-secret'] !== config.proxySecret) {
      res.statusCode = 403;
      res.end();
      return;
    }
    const { userCode, accountId, deny } = await readJSON(req);
    const code = await provider.DeviceCode.findByUserCode(userCode.toUpperCase().replace(/\W/g, ''));
    if (!code) {
      res.statusCode = 404;
      res.end();
      return;
    }
    if (deny) {
      code.error = 'access_denied';
      code.errorDescription = 'the user refused';
    } else {
      const grant = new provider.Grant({ accountId, clientId: code.clientId });
      code.scope = code.params.scope; // what the user consents to: all that was asked
      grant.addOIDCScope(code.scope);
      code.grantId = await grant.save();
      code.accountId = accountId;
      code.authTime = Math.floor(Date.now() / 1000);
    }
    await code.save();
    res.statusCode = 204;
    res.end();
  };
  interact = async (req, res) => {
    const details = await provider.interactionDetails(req, res);
    const { prompt, params, session } = details;
    let result;
    if (prompt.name === 'login') {
      result = { login: { accountId: params.login_hint || 'peter' } };
    } else {
      const grant = details.grantId ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
      if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes || {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      result = { consent: { grantId: await grant.save() } };
    }
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
  };
  provider.on('server_error', (ctx, err) => { console.error('server_error', err); });
  handler = provider.callback();
  process.stdout.write(`LISTENING ${JSON.stringify({ issuer })}\n`);
});

process.stdin.on('end', () => { server.close(); process.exit(0); });
process.stdin.resume();
