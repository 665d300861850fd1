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
const server = http.createServer((req, res) => handler(req, res));
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
    ],
    discovery,
    features: {
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
    ttl: { ClientCredentials: config.tokenTTL || 600 },
  });
  provider.on('server_error', (ctx, err) => { console.error('server_error', err); });
  handler = provider.callback();
  process.stdout.write(`LISTENING ${JSON.stringify({ issuer })}\n`);
});

process.stdin.on('end', () => { server.close(); process.exit(0); });
process.stdin.resume();
