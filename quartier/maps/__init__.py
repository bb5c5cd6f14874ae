"""Maps: folium HTML rendered from geo results; no database access."""
