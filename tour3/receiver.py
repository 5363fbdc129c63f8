import http.server, json
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        ev = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        print(ev["event"], ev["queue_id"], ev["recipient"], ev.get("original_recipient"), ev["reply"], flush=True)
        self.send_response(204)
        self.end_headers()
http.server.HTTPServer(("127.0.0.7", 8080), Receiver).serve_forever()
