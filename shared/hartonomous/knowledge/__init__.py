"""Knowledge: documents become chunk atoms with embeddings, searchable by meaning and words."""
