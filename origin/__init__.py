"""Origin: dedicated seeders that hold every blob on disk, on a rendezvous hash ring."""
