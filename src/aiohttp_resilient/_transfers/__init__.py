"""Large transfers: resumable downloads and splitting batch uploads."""
