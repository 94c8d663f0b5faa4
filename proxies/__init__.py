"""Network edges: shadow proxies and demo model servers; they execute what harness decides."""
