"""Optional bridges to other ecosystems. Each imports its heavy dependency only when called, so `import
alejax` never needs it: `seqio_shop` (ShopSimulator datasets as seqio Tasks, with their replay metric)."""
