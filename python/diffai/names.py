"""Rules on tensor names that the diff and the analyses share."""

import re

# A name's module (the name without its last part) that holds an embedding matrix: the
# embedding role (``analyses.roles``), and the rows the diff sums for the embedding analysis.
EMBED_MODULE = re.compile(r"embed|(^|[._])(wte|wpe|emb|tok_emb\w*|word_emb\w*|position_emb\w*|shared)$", re.IGNORECASE)
