// Calls to the node's JSON API: same origin, relative URLs, the token (when the operator
// gave one) in `Authorization`, never in a URL. Every failure becomes an `ApiError` whose
// message says in words what went wrong and what to do.

const TOKEN_KEY = "rhizome.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

export class ApiError extends Error {
  constructor(message, { status = 0, code = "", unreachable = false } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.unreachable = unreachable;
  }

  // The token is what is missing: typing one in is the remedy.
  get needsToken() {
    return this.status === 401;
  }
}

// What a refused request means for the operator.
export function explain(status, body, what) {
  const said = body && body.message ? ` The node says: ${body.message}` : "";
  if (status === 401) {
    return token()
      ? `The token in use is not accepted for ${what}: type the node's admin token (or its read token, to look only).${said}`
      : `This node needs a token for ${what}: type its admin token (or its read token, to look only) in the Token field above.${said}`;
  }
  if (status === 403) return `The node refuses ${what}.${said}`;
  if (status === 503) return `The node cannot serve ${what} right now (its store is unavailable).${said}`;
  return `The node answered ${status} to ${what}.${said}`;
}

export async function call(method, path, what, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (e) {
    throw new ApiError(
      `The node at ${location.host} is not answering (${e.message || e}). It may be stopped, restarting or out of reach; the console keeps trying.`,
      { unreachable: true },
    );
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    throw new ApiError(explain(response.status, data, what), {
      status: response.status,
      code: data && data.error,
    });
  }
  return data;
}

export const get = (path, what) => call("GET", path, what);
export const post = (path, what, body) => call("POST", path, what, body);
export const del = (path, what) => call("DELETE", path, what);
