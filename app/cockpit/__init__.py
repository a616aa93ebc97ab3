"""The broadcaster's cockpit: figures over time (history, sampler), drawn as SVG (charts) and
offered to Prometheus (metrics). The live figures themselves come from app/stream/health.py
and app/stream/deliveries.py."""
