// Package pull downloads model files into the model folders: from an https URL or a
// Hugging Face file ("hf:owner/repo[@rev]/path"), resumable with HTTP Range requests,
// verified against a SHA-256 when one is known (given, or served by Hugging Face in
// the X-Linked-Etag of its large files), written to a temporary name in the target
// directory and renamed into place only when complete and verified.
//
// Pickle-based files (.ckpt, .pt, .pth, .bin, .pkl) are refused unless the caller
// allows them. A Policy restricts where a download may go (an allow-list of hosts and
// public addresses only), for downloads a server makes on a client's behalf. It imports
// nothing above weights/.
package pull
