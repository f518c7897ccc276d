"""What the tests share: end-to-end process helpers (``e2e``), bus signal watching
(``signals``) and the private-bus fixtures (``fixtures``). Imported as ``tests.helpers``
(the repository root is on pytest's ``pythonpath``)."""
