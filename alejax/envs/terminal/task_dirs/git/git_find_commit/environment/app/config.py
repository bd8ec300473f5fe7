DEBUG = True
API_URL = "https://api.example.com"
API_TOKEN = "dev-only-123"
