"""The machinery the test-image recipes share: constants and helpers (``common``), layer entries
(``entries``), OCI image layouts (``layout``), recipe declarations (``spec``), debootstrap
(``debian``) and the cache (``cache``). ``build_images.py`` is the entry point."""
