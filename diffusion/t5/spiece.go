package t5

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Field numbers of sentencepiece_model.proto.
const (
	fieldModelPieces     = 1 // ModelProto.pieces
	fieldModelTrainer    = 2 // ModelProto.trainer_spec
	fieldModelNormalizer = 3 // ModelProto.normalizer_spec

	fieldPieceText  = 1 // SentencePiece.piece
	fieldPieceScore = 2 // SentencePiece.score
	fieldPieceType  = 3 // SentencePiece.type

	fieldTrainerModelType    = 3  // TrainerSpec.model_type (UNIGRAM = 1)
	fieldTrainerSuffixSpace  = 24 // TrainerSpec.treat_whitespace_as_suffix
	fieldTrainerByteFallback = 35 // TrainerSpec.byte_fallback
	fieldTrainerUnkID        = 40 // TrainerSpec.unk_id
	fieldTrainerEOSID        = 42 // TrainerSpec.eos_id

	fieldNormCharsmap     = 2 // NormalizerSpec.precompiled_charsmap
	fieldNormDummyPrefix  = 3 // NormalizerSpec.add_dummy_prefix
	fieldNormExtraSpaces  = 4 // NormalizerSpec.remove_extra_whitespaces
	fieldNormEscapeSpaces = 5 // NormalizerSpec.escape_whitespaces
)

// t5ExtraIDs is how many <extra_id_N> sentinel tokens transformers' T5Tokenizer adds
// after the SentencePiece vocabulary (extra_ids=100): <extra_id_0> is the last id.
const t5ExtraIDs = 100

// ParseSpieceModel reads a SentencePiece model file (spiece.model: a serialized
// ModelProto) holding a Unigram model, as transformers' T5 tokenizers use it: its
// control and unknown pieces and the 100 <extra_id_N> sentinels are matched as special
// tokens, the end-of-sequence piece is appended.
func ParseSpieceModel(data []byte) (*Vocab, error) {
	var pieces []piece
	trainer := struct {
		modelType         uint64
		suffixSpace, byte bool
		unk, eos          int
	}{modelType: 1, unk: 0, eos: 2}
	norm := normalizer{addDummyPrefix: true, removeExtraWhitespace: true, escapeWhitespace: true}
	var charsmap []byte
	err := protoFields(data, func(field int, wire int, v uint64, b []byte) error {
		if field <= fieldModelNormalizer && wire != wireBytes {
			return fmt.Errorf("field %d has wire type %d, not a message", field, wire)
		}
		switch field {
		case fieldModelPieces:
			p := piece{kind: kindNormal}
			err := protoFields(b, func(f, w int, v uint64, b []byte) error {
				switch {
				case f == fieldPieceText && w == wireBytes:
					p.text = string(b)
				case f == fieldPieceScore && w == wireFixed32:
					p.score = math.Float32frombits(uint32(v))
				case f == fieldPieceType && w == wireVarint:
					if v < uint64(kindNormal) || v > uint64(kindByte) {
						return fmt.Errorf("piece type %d", v)
					}
					p.kind = pieceKind(v)
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("piece %d: %w", len(pieces), err)
			}
			pieces = append(pieces, p)
		case fieldModelTrainer:
			return protoFields(b, func(f, w int, v uint64, _ []byte) error {
				if w != wireVarint {
					return nil
				}
				switch f {
				case fieldTrainerModelType:
					trainer.modelType = v
				case fieldTrainerSuffixSpace:
					trainer.suffixSpace = v != 0
				case fieldTrainerByteFallback:
					trainer.byte = v != 0
				case fieldTrainerUnkID:
					trainer.unk = int(int32(v))
				case fieldTrainerEOSID:
					trainer.eos = int(int32(v))
				}
				return nil
			})
		case fieldModelNormalizer:
			return protoFields(b, func(f, w int, v uint64, b []byte) error {
				switch {
				case f == fieldNormCharsmap && w == wireBytes:
					charsmap = b
				case f == fieldNormDummyPrefix && w == wireVarint:
					norm.addDummyPrefix = v != 0
				case f == fieldNormExtraSpaces && w == wireVarint:
					norm.removeExtraWhitespace = v != 0
				case f == fieldNormEscapeSpaces && w == wireVarint:
					norm.escapeWhitespace = v != 0
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("t5: spiece.model: %w", err)
	}
	if trainer.modelType != 1 {
		return nil, fmt.Errorf("t5: spiece.model: model type %d; only Unigram (1) is supported", trainer.modelType)
	}
	if trainer.suffixSpace {
		return nil, errors.New("t5: spiece.model: treat_whitespace_as_suffix is not supported")
	}
	if len(charsmap) > 0 {
		if norm.cmap, err = parseCharsMap(charsmap); err != nil {
			return nil, err
		}
	}
	var specials []special
	for id, p := range pieces {
		if p.kind == kindControl || p.kind == kindUnknown {
			specials = append(specials, special{text: p.text, id: id})
		}
	}
	for n := 0; n < t5ExtraIDs; n++ {
		specials = append(specials, special{text: fmt.Sprintf("<extra_id_%d>", n), id: len(pieces) + t5ExtraIDs - 1 - n})
	}
	if len(pieces) == 0 {
		return nil, errors.New("t5: spiece.model: no pieces")
	}
	if trainer.unk < 0 || trainer.unk >= len(pieces) || pieces[trainer.unk].kind != kindUnknown {
		return nil, fmt.Errorf("t5: spiece.model: unk_id %d is not an unknown piece", trainer.unk)
	}
	return newVocab(pieces, trainer.unk, trainer.eos, specials, norm, trainer.byte)
}

// Protocol buffer wire types.
const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
	wireFixed32 = 5
)

// protoFields walks the fields of one serialized message, calling f with the field
// number, wire type, the value of varint and fixed fields, and the bytes of
// length-delimited ones (aliasing data). Groups are refused: no SentencePiece field is one.
func protoFields(data []byte, f func(field, wire int, v uint64, b []byte) error) error {
	for len(data) > 0 {
		key, n := binary.Uvarint(data)
		if n <= 0 {
			return errors.New("malformed field key")
		}
		data = data[n:]
		field, wire := int(key>>3), int(key&7)
		if field == 0 || key>>3 > math.MaxInt32 {
			return fmt.Errorf("field number %d", key>>3)
		}
		var v uint64
		var b []byte
		switch wire {
		case wireVarint:
			v, n = binary.Uvarint(data)
			if n <= 0 {
				return fmt.Errorf("field %d: malformed varint", field)
			}
			data = data[n:]
		case wireFixed64:
			if len(data) < 8 {
				return fmt.Errorf("field %d: truncated", field)
			}
			v, data = binary.LittleEndian.Uint64(data), data[8:]
		case wireFixed32:
			if len(data) < 4 {
				return fmt.Errorf("field %d: truncated", field)
			}
			v, data = uint64(binary.LittleEndian.Uint32(data)), data[4:]
		case wireBytes:
			l, n := binary.Uvarint(data)
			if n <= 0 || l > uint64(len(data)-n) {
				return fmt.Errorf("field %d: length past the end", field)
			}
			b, data = data[n:n+int(l)], data[n+int(l):]
		default:
			return fmt.Errorf("field %d: wire type %d is not supported", field, wire)
		}
		if err := f(field, wire, v, b); err != nil {
			return err
		}
	}
	return nil
}
