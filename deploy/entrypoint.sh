#!/bin/sh
# Image entrypoint: for every VAR_FILE in the environment (a Docker/compose secret mounted as a file), export VAR
# with the file's content, then run the command. Secrets stay out of compose files, images and `docker inspect`.
set -eu
for name in $(env | sed -n 's/^\([A-Z_][A-Z0-9_]*\)_FILE=.*/\1/p'); do
    eval "file=\${${name}_FILE}"
    if [ -r "$file" ]; then
        eval "export ${name}=\"\$(cat \"\$file\")\""
        unset "${name}_FILE"
    fi
done
exec "$@"
