"""Pure warning models (no storage, no HTTP): each module implements one published method from
``docs`` science §1–§5 and is pinned by the verification cases of science §6."""
