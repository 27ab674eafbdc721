#!/bin/sh
# nginx container entry point: render the templates from SKINDX_* (compose passes the values of
# the repository's .env), check the result with `nginx -t`, then run nginx in the foreground.
# Everything written goes to SKINDX_NGINX_PREFIX (a tmpfs; the root filesystem is read-only).
set -eu

: "${SKINDX_MAX_UPLOAD_MB:?set SKINDX_MAX_UPLOAD_MB (the repository .env has it)}"
: "${SKINDX_MAX_BATCH_FILES:?set SKINDX_MAX_BATCH_FILES (the repository .env has it)}"
case "$SKINDX_MAX_UPLOAD_MB$SKINDX_MAX_BATCH_FILES" in
  *[!0-9]*) echo "SKINDX_MAX_UPLOAD_MB and SKINDX_MAX_BATCH_FILES must be whole numbers" >&2; exit 2 ;;
esac
# derived limits (deploy/stack.py computes the same for `make serve`): the file(s) plus 64 KB of
# multipart framing
export SKINDX_CLIENT_MAX_BODY="$((SKINDX_MAX_UPLOAD_MB * 1024 + 64))k"
export SKINDX_BATCH_MAX_BODY="$((SKINDX_MAX_UPLOAD_MB * 1024 * SKINDX_MAX_BATCH_FILES + 64))k"

prefix=${SKINDX_NGINX_PREFIX:?}
templates=/etc/skindx/nginx
mkdir -p "$prefix/conf.d" "$prefix/snippets" "$prefix/tmp"
cp "$templates"/snippets/*.conf "$prefix/snippets/"

# only our ${SKINDX_*} placeholders; nginx's own $variables stay as they are
names=$(env | sed -n 's/^\(SKINDX_[A-Z0-9_]*\)=.*/${\1}/p' | tr '\n' ' ')
envsubst "$names" < "$templates/main.conf.template" > "$prefix/nginx.conf"
envsubst "$names" < "$templates/skindx.conf.template" > "$prefix/conf.d/skindx.conf"
if left=$(grep -oh '\${SKINDX_[A-Z0-9_]*}' "$prefix/nginx.conf" "$prefix/conf.d/skindx.conf"); then
  echo "no value for template placeholder(s): $(echo "$left" | sort -u | tr '\n' ' ')" >&2
  exit 2
fi

# the operators' login for /prometheus/ and /monitoring/ (nginx basic auth): one user, its
# password hashed with SHA-512 crypt (perl-base's crypt(), glibc's libcrypt, which nginx reads
# too). No password: an empty file, and those routes refuse everyone (401).
htpasswd="$prefix/operators.htpasswd"
: > "$htpasswd"
chmod 600 "$htpasswd"
if [ -n "${SKINDX_OPERATOR_PASSWORD:-}" ]; then
  export SKINDX_OPERATOR_USER="${SKINDX_OPERATOR_USER:-operator}"
  case "$SKINDX_OPERATOR_USER" in
    *:*|*[[:space:]]*) echo "SKINDX_OPERATOR_USER must not contain ':' or spaces" >&2; exit 2 ;;
  esac
  perl -e 'open(my $r, "<", "/dev/urandom") or die "no /dev/urandom"; read($r, my $raw, 16);
    my @c = ("a".."z", "A".."Z", 0..9, ".", "/");
    my $salt = join "", map { $c[ord($_) % 64] } split //, $raw;
    my $hash = crypt($ENV{SKINDX_OPERATOR_PASSWORD}, "\$6\$$salt\$");
    die "crypt() has no SHA-512\n" unless defined $hash && $hash =~ /^\$6\$/;
    print "$ENV{SKINDX_OPERATOR_USER}:$hash\n"' > "$htpasswd"
fi
unset SKINDX_OPERATOR_PASSWORD

nginx -t -q -p "$prefix" -c "$prefix/nginx.conf" -e stderr
exec nginx -p "$prefix" -c "$prefix/nginx.conf" -e stderr -g "daemon off;"
